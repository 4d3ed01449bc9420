#!/usr/bin/env python3
"""Bad bytes against every operation of a running Herald's served OpenAPI document.

For each operation it sends, with valid credentials and real ids (so the requests reach the handlers
and the store): NUL, escape and other control characters, and lone surrogates ("\\ud800") in every
string field of the body and in every other field; invalid UTF-8 bodies; a 10,000-deep JSON body and
10,000-deep event data; a 300 KiB body; bodies that are not objects; huge, negative and fractional
numbers; extreme dates (-262143, year 0, 1969, 10000, +262142, February 30); and hostile query
parameters (NUL, invalid UTF-8, surrogates, 20-digit and negative `limit`, extreme dates, 10 KiB
values), path ids and headers (invalid UTF-8 and control bytes in Authorization, X-API-Key,
Idempotency-Key and Content-Type). Any 5xx, or a request that gets no answer, fails the run (exit 1);
Herald's log is checked by the caller (.ci/fuzz.sh). Standard library only.

Usage: hostile.py BASE_URL API_KEY --webhook ID --delivery ID --event ID --doomed-webhook ID --doomed-key ID
"""

import argparse
import http.client
import json
import sys
import urllib.parse

DEEP = 10_000
BIG = 300 * 1024

# Strings as JSON text (not Python strings), so that lone surrogates and escapes reach Herald as sent.
STRINGS = [
    r'"\u0000"',
    r'"a\u0000b"',
    r'"\ud800"',
    r'"\udfff\ud800"',
    r'"\u001b[31m\u0007\u0008"',
    r'"tab\tnew\nline\r"',
    r'"\u007f\u0085\u2028\ufeff"',
    '"' + "\u00e9" * 300 + '"',
]
DATES = [
    '"-262143-01-01T00:00:00Z"',
    '"+262142-12-31T23:59:59Z"',
    '"0000-01-01T00:00:00Z"',
    '"1969-12-31T23:59:59Z"',
    '"10000-01-01T00:00:00Z"',
    '"9999-12-31T23:59:60Z"',
    '"2024-02-30T00:00:00Z"',
    '"2030-01-01T00:00:00+25:00"',
]
NUMBERS = ["-1", "0", "1.5", "1e400", "-1e400", "9223372036854775808", "-9223372036854775809", "1" * 40]
NOT_OBJECTS = ["null", "[]", '"x"', "1", "[null, null]", '{"a": 1} {"b": 2}']
QUERY_VALUES = [
    "%00",
    "a%00b",
    "%FF%FE",
    "%ED%A0%80",  # a UTF-8-encoded lone surrogate: invalid UTF-8
    "%C0%80",  # an overlong NUL
    "99999999999999999999",
    "-9223372036854775808",
    "-1",
    "0",
    "-262143-01-01T00:00:00Z",
    "%2B262142-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "x" * 10_000,
]
PATH_IDS = ["%00", "%FF", "%ED%A0%80", "-1", "0" * 10_000, "00000000-0000-0000-0000-000000000000"]


class Run:
    def __init__(self, base, key, ids):
        url = urllib.parse.urlsplit(base)
        self.host, self.port = url.hostname, url.port or 80
        self.key = key
        self.ids = ids
        self.sent = 0
        self.failures = []
        self.connection = None

    def send(self, method, target, body=None, headers=None, what=""):
        """Sends one request (body: str or bytes); records a failure on a 5xx or no answer."""
        all_headers = {"Authorization": f"Bearer {self.key}".encode()}
        if body is not None:
            all_headers["Content-Type"] = b"application/json"
        all_headers.update(headers or {})
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        self.sent += 1
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.connection.putrequest(method, target, skip_accept_encoding=True)
                for name, value in all_headers.items():
                    self.connection.putheader(name, value)
                if body is not None:
                    self.connection.putheader("Content-Length", str(len(body)))
                self.connection.endheaders(body)
                response = self.connection.getresponse()
                answer = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                break
            except (http.client.HTTPException, OSError) as error:
                self.close()
                # A kept-alive connection the server closed between requests: once more on a new one.
                if attempt == 2:
                    self.failures.append(f"{method} {target[:120]} {what}: no answer ({error!r})")
                    return
        if response.status >= 500:
            self.failures.append(
                f"{method} {target[:120]} {what}: {response.status} {answer[:300]!r}"
            )

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def resolve(document, schema):
    """The schema with `$ref`s followed and a `oneOf` [X, null] taken as X."""
    while True:
        if "$ref" in schema:
            schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        elif "oneOf" in schema:
            schema = next((s for s in schema["oneOf"] if s.get("type") != "null"), schema["oneOf"][0])
        else:
            return schema


def valid_value(document, schema):
    """A plausible valid value (JSON text) for a property, to fill the fields not under test."""
    schema = resolve(document, schema)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if "enum" in schema:
        return json.dumps(schema["enum"][0])
    if kind == "string":
        if schema.get("format") == "date-time":
            return '"2030-01-01T00:00:00Z"'
        return '"https://hooks.example.com/hostile"'
    if kind in ("integer", "number"):
        return "1"
    if kind == "boolean":
        return "true"
    if kind == "array":
        return '["*"]'
    return "{}"


def object_text(fields):
    return "{" + ", ".join(f"{json.dumps(name)}: {value}" for name, value in fields.items()) + "}"


def body_cases(document, schema):
    """(what, body) pairs for an operation's JSON body."""
    schema = resolve(document, schema)
    properties = schema.get("properties", {})
    base = {name: valid_value(document, prop) for name, prop in properties.items()}
    cases = []
    for name, prop in properties.items():
        prop = resolve(document, prop)
        values = list(STRINGS) + NUMBERS[:3]
        if prop.get("format") == "date-time" or "time" in name or name in ("since", "until"):
            values += DATES
        if prop.get("type") in ("integer", "number") or "integer" in (prop.get("type") or []):
            values += NUMBERS
        for value in values:
            cases.append((f"{name}={value[:40]}", object_text({**base, name: value})))
        cases.append((f"{name} in an array", object_text({**base, name: "[" + STRINGS[0] + "]"})))
    for value in STRINGS[:4]:
        cases.append((f"every field {value}", object_text({name: value for name in properties})))
    cases.append(("an unknown field with NUL", object_text({**base, "a\u0000b": STRINGS[0]})))
    cases.append(("a NUL field name", object_text({**base, "\u0000": "1"})))
    cases.append(("10,000-deep array", "[" * DEEP + "]" * DEEP))
    cases.append(("10,000-deep object", '{"a":' * DEEP + "1" + "}" * DEEP))
    cases.append(("10,000-deep field", object_text({**base, next(iter(properties), "a"): "[" * DEEP + "]" * DEEP})))
    cases.append(("300 KiB field", object_text({**base, next(iter(properties), "a"): '"' + "a" * BIG + '"'})))
    cases.append(("300 KiB of spaces", " " * BIG + "{}"))
    for text in NOT_OBJECTS:
        cases.append((f"not an object: {text}", text))
    cases.append(("invalid UTF-8 in a string", b'{"name": "\xff\xfe", "url": "\xc0\x80"}'))
    cases.append(("invalid UTF-8 outside strings", b"{\xff: 1}"))
    cases.append(("a raw NUL byte", b'{"name": "a\x00b"}'))
    cases.append(("a UTF-8 BOM", b"\xef\xbb\xbf{}"))
    cases.append(("truncated", object_text(base)[:-1]))
    return cases


def event_cases():
    """POST /events: the data is JSON kept as sent."""
    cases = []
    for value in STRINGS:
        cases.append((f"data string {value[:20]}", f'{{"event": "item.created", "data": {{"s": {value}}}}}'))
        cases.append((f"data key {value[:20]}", f'{{"event": "item.created", "data": {{{value}: 1}}}}'))
        cases.append((f"event {value[:20]}", f'{{"event": {value}, "data": {{}}}}'))
        cases.append(
            (f"idempotency_key {value[:20]}", f'{{"event": "item.created", "data": {{}}, "idempotency_key": {value}}}')
        )
    cases.append(("10,000-deep data", '{"event": "item.created", "data": {"a": ' + "[" * DEEP + "]" * DEEP + "}}"))
    cases.append(("300 KiB data", '{"event": "item.created", "data": {"a": "' + "a" * BIG + '"}}'))
    cases.append(("numbers in data", '{"event": "item.created", "data": {"n": 1e400, "m": -0, "k": 123456789012345678901234567890}}'))
    cases.append(("data not an object", '{"event": "item.created", "data": "\\u0000"}'))
    return cases


HEADER_VALUES = [b"\xff\xfe", b"a\x00b", b"\x01\x02", b"\xed\xa0\x80", b"\t", b"x" * 10_000]


def header_cases(run, method, target, body):
    for value in HEADER_VALUES:
        run.send(method, target, body, {"Authorization": b"Bearer " + value}, "Authorization")
        run.send(method, target, body, {"Authorization": b"", "X-API-Key": value}, "X-API-Key")
        if body is not None:
            run.send(method, target, body, {"Content-Type": b"application/json; charset=" + value}, "Content-Type")
    run.send(method, target, body, {"Authorization": b"Bearer " + run.key.encode() + b"\x00"}, "key + NUL")


def concrete(path, method, ids):
    """The path with its `{id}` replaced by an id that exists (so the request reaches the store)."""
    if "{id}" not in path:
        return path
    if path == "/api/v1/webhooks/{id}" and method == "DELETE":
        real = ids["doomed_webhook"]
    elif path.startswith("/api/v1/webhooks/"):
        real = ids["webhook"]
    elif path.startswith("/api/v1/deliveries/"):
        real = ids["delivery"]
    elif path.startswith("/api/v1/events/"):
        real = ids["event"]
    else:
        real = ids["doomed_key"]
    return path.replace("{id}", real)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("key")
    for name in ("webhook", "delivery", "event", "doomed-webhook", "doomed-key"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    ids = {
        "webhook": args.webhook,
        "delivery": args.delivery,
        "event": args.event,
        "doomed_webhook": args.doomed_webhook,
        "doomed_key": args.doomed_key,
    }
    run = Run(args.base, args.key, ids)
    prefix = urllib.parse.urlsplit(args.base).path.rstrip("/")
    connection = http.client.HTTPConnection(run.host, run.port, timeout=30)
    connection.request("GET", prefix + "/api/v1/openapi.json")
    document = json.loads(connection.getresponse().read())
    connection.close()

    operations = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            operations.append((path, method.upper(), operation))
    # Destructive operations last, so the others keep finding their resources.
    operations.sort(key=lambda op: op[1] == "DELETE")
    for path, method, operation in operations:
        target = prefix + concrete(path, method, ids)
        schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if path == "/api/v1/events" and method == "POST":
            bodies = event_cases() + body_cases(document, schema)
        elif schema is not None:
            bodies = body_cases(document, schema)
        else:
            bodies = [("no body", None), ("an unexpected body", r'{"a": "\u0000"}')]
        for what, body in bodies:
            run.send(method, target, body, what=what)
        if method == "POST" and path == "/api/v1/events":
            for value in HEADER_VALUES:
                run.send(method, target, '{"event": "item.created", "data": {}}', {"Idempotency-Key": value}, "Idempotency-Key")
        params = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
        for name in sorted(set(params) | {"limit"}):
            for value in QUERY_VALUES:
                run.send(method, f"{target}?{urllib.parse.quote(name)}={value}", bodies[0][1], what=name)
        run.send(method, f"{target}?%00=%00&limit=1&limit=2", bodies[0][1], what="repeated and NUL names")
        if "{id}" in path:
            for value in PATH_IDS:
                run.send(method, prefix + path.replace("{id}", value), bodies[0][1], what="path id")
        header_cases(run, method, target, bodies[0][1])
    run.close()

    print(f"hostile.py: {run.sent} requests over {len(operations)} operations, {len(run.failures)} failures")
    for failure in run.failures[:50]:
        print(f"  {failure}", file=sys.stderr)
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
