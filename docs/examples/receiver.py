#!/usr/bin/env python3
"""A webhook receiver for trying Herald locally: verifies X-Signature and the Standard Webhooks
signature of every request, prints the event, answers 204. Standard library only.

During a secret rotation's grace period X-Signature is signed with the old secret and X-Signature-Next
with the new one, so this receiver accepts either header: start it with the old secret or the new one.

    python3 docs/examples/receiver.py --secret 'whsec_...' [--port 9000]
"""
import argparse
import base64
import hashlib
import hmac
import http.server
import json
import time


def verify_x_signature(secret, headers, body):
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, headers.get(name, "")) for name in ("x-signature", "x-signature-next"))


def verify_standard_webhooks(secret, headers, body, tolerance=300):
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, c[3:]) for c in headers["webhook-signature"].split() if c.startswith("v1,"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret", required=True, help="the webhook's secret, as returned when it was created")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {name.lower(): value for name, value in self.headers.items()}
            signed = verify_x_signature(args.secret, headers, body) and \
                verify_standard_webhooks(args.secret, headers, body)
            event = json.loads(body)
            print(f"{'verified' if signed else 'BAD SIGNATURE'} {event['event']} {event['id']} data={json.dumps(event['data'])}", flush=True)
            self.send_response(204 if signed else 401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)  # binds, or fails here
    print(f"listening on http://127.0.0.1:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
