#!/usr/bin/env python3
"""Page-load times of the Herald console with 10,000 deliveries in the store (bench/console.sh runs it).

Starts `herald serve` (embedded mode: SQLite, in-process queue) on a free port with its data in a fresh
folder, subscribes WEBHOOKS webhooks to local receivers on 127.0.0.1 (one of them answering 500, so its
deliveries retry and die), sends events until DELIVERIES deliveries exist, signs in to the console and
loads each page LOADS times, one after another, over one keep-alive connection. Prints p50/p99/max per
page (server time as the client sees it: request sent to body read) and exits non-zero if any page is
not a 200 or its p99 exceeds the budget (200 ms).
"""

import argparse
import http.client
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

BUDGET_MS = 200.0


def receiver(status):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        count = 0

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            Handler.count += 1
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/hook", Handler


class Client:
    def __init__(self, port):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies = {}

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        started = time.perf_counter()
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";")[0]
        return response.status, data.decode(errors="replace"), elapsed, dict(response.getheaders())

    def api(self, method, path, key, body=None):
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        status, text, _, _ = self.request(method, "/api/v1" + path, json.dumps(body) if body is not None else None, headers)
        return status, json.loads(text) if text else None


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * share))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="the herald binary")
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--webhooks", type=int, default=4)
    parser.add_argument("--loads", type=int, default=50)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="herald-console-bench-")
    with socket_port() as port:
        pass
    env = dict(os.environ,
               HERALD_CONFIG_DIR=work,
               HERALD__SERVER__BIND=f"127.0.0.1:{port}",
               HERALD__ADMIN__BIND="127.0.0.1:0",
               HERALD__DATABASE__URL=f"sqlite://{work}/herald.db",
               HERALD__SECRETS__KEY_FILE=f"{work}/herald.key",
               HERALD__DELIVERY__ALLOWED_CIDRS="127.0.0.1/32",
               HERALD__DELIVERY__RETRY_SCHEDULE="1s,1s",
               HERALD__DELIVERY__DISABLE_AFTER_DEAD="0",
               HERALD__AUTH__RATE_LIMIT_PER_SECOND="0",
               HERALD__LOG__LEVEL="warn")
    herald = subprocess.Popen([args.bin, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        key = None
        for line in herald.stdout:
            if line.startswith("sk_live_"):
                key = line.strip()
                break
        assert key, "herald printed no admin key"
        threading.Thread(target=lambda: [None for _ in herald.stdout], daemon=True).start()
        client = wait_ready(port)

        receivers = [receiver(500 if i == 0 else 200) for i in range(args.webhooks)]
        hooks = []
        for url, _ in receivers:
            status, created = client.api("POST", "/webhooks", key, {"url": url, "events": ["*"], "description": "bench"})
            assert status == 201, created
            hooks.append(created["id"])
        events = args.deliveries // args.webhooks
        started = time.time()
        for i in range(events):
            status, accepted = client.api("POST", "/events", key, {"event": "item.created", "data": {"item_id": str(i), "name": "Chair"}})
            assert status == 202, accepted
        # Every delivery attempted at least once (the failing endpoint's: all three attempts, then dead).
        deadline = time.time() + 300
        while sum(handler.count for _, handler in receivers[1:]) < events * (args.webhooks - 1) or receivers[0][1].count < events * 3:
            assert time.time() < deadline, [h.count for _, h in receivers]
            time.sleep(0.5)
        print(f"seeded {events * args.webhooks} deliveries ({events} events x {args.webhooks} webhooks, "
              f"{events} dead) in {time.time() - started:.0f} s", flush=True)

        status, form, _, _ = client.request("GET", "/console/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        body = urllib.parse.urlencode({"csrf": csrf, "credential": key})
        status, _, _, _ = client.request("POST", "/console/sign-in", body, {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 303, status
        _, page, _, _ = client.request("GET", "/console/webhooks/" + hooks[1])
        delivery = re.search(r'/console/deliveries/([0-9a-f-]{36})', page).group(1)
        _, events_page, _, _ = client.request("GET", "/console/events")
        event = re.search(r'/console/events/([0-9a-f-]{36})', events_page).group(1)
        pages = [
            ("overview", "/console"),
            ("webhooks", "/console/webhooks"),
            ("webhook", f"/console/webhooks/{hooks[1]}"),
            ("deliveries", f"/console/webhooks/{hooks[1]}/deliveries"),
            ("deliveries?status=dead", f"/console/webhooks/{hooks[0]}/deliveries?status=dead"),
            ("replay confirmation", f"/console/webhooks/{hooks[0]}/replay"),
            ("delivery", f"/console/deliveries/{delivery}"),
            ("events", "/console/events"),
            ("event", f"/console/events/{event}"),
            ("api-keys", "/console/api-keys"),
            ("users", "/console/users"),
        ]
        failed = False
        print(f"{'page':<24} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   ({args.loads} loads each)")
        for name, path in pages:
            times = []
            for _ in range(args.loads):
                status, _, elapsed, _ = client.request("GET", path)
                assert status == 200, (path, status)
                times.append(elapsed)
            p99 = percentile(times, 0.99)
            failed |= p99 > BUDGET_MS
            print(f"{name:<24} {percentile(times, 0.5):>8.1f} {p99:>8.1f} {max(times):>8.1f}", flush=True)
        if failed:
            print(f"a page's p99 is over the {BUDGET_MS:.0f} ms budget", file=sys.stderr)
            sys.exit(1)
    finally:
        herald.terminate()
        herald.wait(timeout=30)


class socket_port:
    """A free TCP port on 127.0.0.1."""

    def __enter__(self):
        import socket
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        return self.socket.getsockname()[1]

    def __exit__(self, *exc):
        self.socket.close()


def wait_ready(port):
    deadline = time.time() + 60
    while True:
        try:
            client = Client(port)
            status, _, _, _ = client.request("GET", "/healthz")
            if status == 200:
                return client
        except OSError:
            pass
        assert time.time() < deadline, "herald did not start"
        time.sleep(0.2)


if __name__ == "__main__":
    main()
