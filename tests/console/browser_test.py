#!/usr/bin/env python3
"""Browser tests of the Herald console: headless Chromium (the system's, driven by Playwright) against
a running Herald whose URL and keys the Rust wrapper (tests/it/console_browser.rs) passes in:

  HERALD_CONSOLE_URL   http://127.0.0.1:PORT of the Herald under test
  HERALD_ADMIN_KEY     an admin's API key
  HERALD_MEMBER_KEY    a member's API key
  HERALD_CHROMIUM      the browser binary (default /usr/bin/chromium)
  HERALD_CONSOLE_SCREENSHOTS  a folder: each page is saved there at 1280x800 (e.g. docs/console)

Receivers are real HTTP servers on 127.0.0.1 started here; each verifies X-Signature and the Standard
Webhooks signature with the secret the console showed, and answers 401 to what it cannot verify.
Prints one line per check and ends with 'N passed, 0 failed'; exits non-zero on the first failure.
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE = os.environ["HERALD_CONSOLE_URL"].rstrip("/")
ADMIN_KEY = os.environ["HERALD_ADMIN_KEY"]
MEMBER_KEY = os.environ["HERALD_MEMBER_KEY"]
CHROMIUM = os.environ.get("HERALD_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("HERALD_CONSOLE_SCREENSHOTS")
HOSTILE_BODY = b"<script>window.__pwned = 1; document.title = 'pwned'</script><img src=x onerror=\"window.__pwned = 2\">"
TIMEOUT_MS = 30_000
passed = 0


def check(name):
    global passed
    passed += 1
    print(f"ok {passed} - {name}", flush=True)


def shot(page, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=False)


def api(method, path, key, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + "/api/v1" + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class Receiver:
    """A webhook receiver on 127.0.0.1 that verifies signatures; `answer` says what it answers."""

    def __init__(self, status=200, body=b"ok"):
        self.secrets, self.arrivals, self.status, self.body = [], [], status, body
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                verified = receiver.verify(self.headers, raw)
                receiver.arrivals.append((verified, json.loads(raw)))
                status, body = (receiver.status, receiver.body) if verified else (401, b"bad signature")
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def verify(self, headers, body):
        for secret in self.secrets:
            hex_ok = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest() == headers.get("X-Signature")
            key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
            signed = f"{headers.get('webhook-id')}.{headers.get('webhook-timestamp')}.".encode() + body
            expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
            if hex_ok and expected in headers.get("webhook-signature", "").split(" "):
                return True
        return False

    def verified(self, event_type):
        return [data for ok, data in self.arrivals if ok and data["event"] == event_type]

    def wait(self, event_type, count=1, seconds=20):
        return poll(
            lambda: len(self.verified(event_type)) >= count and self.verified(event_type),
            seconds,
            lambda: f"{count} verified {event_type} expected at {self.url}, got {self.arrivals}",
        )


def sign_in(page, key):
    page.goto(BASE + "/console/sign-in")
    # Keyboard only: the field has the focus, Enter submits.
    expect(page.locator("#credential")).to_be_focused()
    page.keyboard.type(key)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "/sign-in" not in page.url, page.locator("main").inner_text()


def create_webhook(page, receiver, events, description):
    page.goto(BASE + "/console/webhooks")
    page.fill("#url", receiver.url)
    page.fill("#description", description)
    for event in events:
        page.check(f'input[name="events"][value="{event}"]')
    page.click("text=Create webhook")
    expect(page.locator("h1")).to_have_text("Webhook created")
    secret = page.locator("#secret").inner_text().strip()
    assert secret.startswith("whsec_"), secret
    receiver.secrets.append(secret)
    page.click("text=Go to the webhook")
    return page.url.rsplit("/", 1)[1]


def poll(probe, seconds, failure, step=0.1):
    """Calls `probe` every `step` seconds until it returns something truthy, which is returned; after
    `seconds`, fails with the message `failure()` gives."""
    deadline = time.time() + seconds
    while True:
        found = probe()
        if found:
            return found
        if time.time() > deadline:
            raise AssertionError(failure())
        time.sleep(step)


def wait_for_deliveries(query, seconds=10):
    """Polls `GET /deliveries?{query}` until it lists one: an outcome is recorded a moment after the receiver answers."""

    def listed():
        status, found = api("GET", f"/deliveries?{query}", ADMIN_KEY)
        assert status == 200, (status, found)
        return found["deliveries"]

    return poll(listed, seconds, lambda: f"no delivery for {query} after {seconds}s")


def wait_for_text(page, url, text, seconds=25):
    """Reloads `url` until `text` is on it (the deliveries' states change in the background)."""

    def shown():
        page.goto(url)
        return text in page.content()

    poll(shown, seconds, lambda: f"{text!r} not on {url} after {seconds}s", step=0.5)


def main():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        dialogs, errors = [], []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)

        page.goto(BASE + "/console")
        expect(page).to_have_url(BASE + "/console/sign-in")
        shot(page, "sign-in")
        sign_in(page, ADMIN_KEY)
        expect(page.locator("h1")).to_have_text("Overview")
        cookies = {c["name"]: c for c in context.cookies()}
        session = cookies["herald_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict", session
        assert ADMIN_KEY not in json.dumps(page.evaluate("() => [Object.entries(localStorage), Object.entries(sessionStorage), document.cookie]"))
        check("sign in with an API key by keyboard; HttpOnly SameSite=Strict session cookie; the key in no browser storage")

        # A webhook to a real receiver; an event; the delivery succeeds.
        good = Receiver()
        hook = create_webhook(page, good, ["item.created"], "CRM sync")
        status, accepted = api("POST", "/events", ADMIN_KEY, {"event": "item.created", "data": {"item_id": "42", "name": "Chair"}})
        assert status == 202, accepted
        good.wait("item.created")
        expect(page.locator("#recent .badge.succeeded").first).to_be_visible()
        check("create a webhook in the console, send an event, see the delivery succeed (signature verified by the receiver)")

        page.click("text=Send test event")
        expect(page.locator(".notice")).to_contain_text("test event")
        good.wait("webhook.test")
        expect(page.locator("#recent tbody tr")).to_have_count(2)
        expect(page.locator("#recent .badge.succeeded")).to_have_count(2)
        shot(page, "webhook")
        check("send a test event from the webhook's page and watch it arrive")

        # A receiver failing until its deliveries are dead, then fixed; replay from the dead-letter view.
        failing = Receiver(status=503, body=b"down for maintenance")
        flaky = create_webhook(page, failing, ["comment.created"], "flaky endpoint")
        status, _ = api("POST", "/events", ADMIN_KEY, {"event": "comment.created", "data": {"comment_id": "7", "text": "First!"}})
        assert status == 202
        dead_view = f"{BASE}/console/webhooks/{flaky}/deliveries?status=dead"
        wait_for_text(page, dead_view, "badge dead")
        shot(page, "deliveries")
        failing.status = 200
        page.click("text=Replay dead deliveries…")
        expect(page.locator("#replay-count")).to_contain_text("1 dead delivery")
        page.click("button:has-text('Replay 1 delivery')")
        expect(page.locator(".notice")).to_contain_text("queued again")
        arrivals = failing.wait("comment.created", count=5)
        assert len(failing.verified("comment.created")) == 5, failing.arrivals
        wait_for_text(page, f"{BASE}/console/webhooks/{flaky}/deliveries?status=succeeded", "badge succeeded")
        page.click("#log a >> nth=0")
        expect(page.locator("#delivery-status")).to_contain_text("succeeded")
        expect(page.locator("pre.response").first).to_contain_text("down for maintenance")
        expect(page.locator("table.headers")).to_contain_text("webhook-signature")
        assert "whsec_" not in page.content()
        shot(page, "delivery")
        check("a receiver fails until the delivery is dead; replayed from the dead-letter view (the confirmation says 1), it succeeds")

        # A receiver answering with markup: shown as text, nothing runs.
        hostile = Receiver(status=500, body=HOSTILE_BODY)
        create_webhook(page, hostile, ["item.deleted"], "hostile receiver")
        api("POST", "/events", ADMIN_KEY, {"event": "item.deleted", "data": {"item_id": "<img src=x onerror=alert(3)>"}})
        hostile.wait("item.deleted")
        delivery = wait_for_deliveries("event_type=item.deleted")[0]["id"]
        wait_for_text(page, f"{BASE}/console/deliveries/{delivery}", "&lt;script&gt;")
        expect(page.locator("pre.response").first).to_contain_text("<script>window.__pwned")
        page.wait_for_timeout(500)
        assert page.evaluate("() => window.__pwned") is None, "the receiver's script ran"
        assert page.title() != "pwned" and not dialogs, (page.title(), dialogs)
        check("a receiver's <script> and onerror= in its response and the event's data run nothing")

        # API keys: created with name, purpose, expiry; shown once; revoked, then refused by the API.
        page.goto(BASE + "/console/api-keys")
        page.fill("#name", "Zapier production")
        page.select_option("#purpose", "zapier")
        page.fill("#expires_at", "2099-01-31T12:00")
        page.click("text=Create key")
        expect(page.locator("h1")).to_have_text("API key created")
        key = page.locator("#new-key").inner_text().strip()
        assert key.startswith("sk_live_"), key
        assert api("GET", "/event-types", key)[0] == 200
        page.click("text=Back to the keys")
        row = page.locator("tr", has_text="Zapier production")
        expect(row).to_contain_text("zapier")
        expect(row).to_contain_text("2099-01-31 12:00:00 UTC")
        shot(page, "api-keys")
        row.locator("button:has-text('Revoke')").click()
        expect(page.locator(".notice")).to_contain_text("revoked")
        assert any("Revoke the key Zapier production" in d for d in dialogs), dialogs
        status, refusal = api("GET", "/event-types", key)
        assert (status, refusal["code"]) == (401, "api_key_revoked"), (status, refusal)
        check("create an API key (name, purpose, expiry), see it once, revoke it: the API refuses it")

        # Forms without the session's CSRF token are refused, from this page and from another site.
        answer = page.evaluate("""async () => {
            const response = await fetch('/console/webhooks', {method: 'POST',
                headers: {'Content-Type': 'application/x-www-form-urlencoded'},
                body: 'url=https%3A%2F%2Fevil.example%2Fh&events=item.created'});
            return [response.status, await response.text()];
        }""")
        assert answer[0] == 403 and "csrf_failed" in answer[1], answer[0]
        evil = EvilSite(BASE + "/console/webhooks")
        other = context.new_page()
        other.goto(evil.url)
        other.wait_for_load_state("networkidle")
        assert "csrf_failed" in other.content() or "/sign-in" in other.url, other.url
        other.close()
        evil.close()
        status, hooks = api("GET", "/webhooks", ADMIN_KEY)
        assert hooks["total"] == 3 and "evil.example" not in json.dumps(hooks), hooks
        check("form posts without the CSRF token (same page, and another site's auto-submitting form) are refused")
        errors.clear()  # the refused fetch above logs its 403

        for path, name in [("/console", "overview"), ("/console/webhooks", "webhooks"), ("/console/events", "events"), ("/console/users", "users")]:
            page.goto(BASE + path)
            expect(page.locator("main h1")).to_be_visible()
            shot(page, name)
        page.goto(BASE + "/console/events")
        page.click("#main table a >> nth=0")
        expect(page.locator("h1")).to_contain_text("Event")
        shot(page, "event")
        # Keyboard: the first Tab reaches the skip link, which moves focus to the content.
        page.goto(BASE + "/console/webhooks")
        page.keyboard.press("Tab")
        expect(page.locator("a.skip")).to_be_focused()
        check("every page renders for an admin (screenshots at 1280x800), reachable by keyboard")

        member = browser.new_context(viewport={"width": 1280, "height": 800})
        member.set_default_timeout(TIMEOUT_MS)
        member_page = member.new_page()
        sign_in(member_page, MEMBER_KEY)
        expect(member_page).to_have_url(BASE + "/console/events")
        nav = member_page.locator("header nav")
        expect(nav.locator("text=Webhooks")).to_have_count(0)
        expect(nav.locator("text=Users")).to_have_count(0)
        for path in ["/console/users", "/console/webhooks", f"/console/webhooks/{hook}"]:
            response = member_page.goto(BASE + path)
            assert response.status == 403, (path, response.status)
            expect(member_page.locator("h1")).to_have_text("Not allowed")
        member.close()
        check("a member does not see the admin pages (no links; 403 when asked)")

        page.goto(BASE + "/console")
        page.click("text=Sign out")
        expect(page).to_have_url(BASE + "/console/sign-in?ended=signed_out")
        page.goto(BASE + "/console/webhooks")
        expect(page).to_have_url(BASE + "/console/sign-in")
        assert not errors, errors
        check("sign out ends the session; no error in the browser console (no CSP violation anywhere)")
        browser.close()
    print(f"{passed} passed, 0 failed", flush=True)


class EvilSite:
    """Another origin (a second port) serving a form that posts to the console by itself."""

    def __init__(self, target):
        page = f"""<!doctype html><form id=f method=post action="{target}">
<input name=url value="https://evil.example/h"><input name=events value="item.created"></form>
<script>document.getElementById('f').submit()</script>""".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://localhost:{self.server.server_address[1]}/"

    def close(self):
        self.server.shutdown()


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # noqa: BLE001 - reported as the failing check
        print(f"not ok {passed + 1} - {type(error).__name__}: {error}", flush=True)
        print(f"{passed} passed, 1 failed", flush=True)
        sys.exit(1)
