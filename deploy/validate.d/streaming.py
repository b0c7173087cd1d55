"""Checks the HTTP fallback transports through a load balancer: an HTTP-streaming and an
SSE session are opened, their commands posted to /emulation several times (so that,
behind a balancer without stickiness, some land on another node than the session's),
and a publication made through the server API must arrive on both streams while they
stay open, which shows the balancer passes each chunk on as it is written.

    streaming.py BASE_URL HMAC_SECRET API_KEY

Python standard library only.
"""

import http.client
import json
import sys
import time
import urllib.parse
import urllib.request

from traffic import api, token


class Stream:
    """One streaming response read line by line (HTTP-streaming, or SSE `data:` lines)."""

    def __init__(self, base, method, path, body, events):
        parts = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        self.conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        self.response = self.conn.getresponse()
        if self.response.status != 200:
            raise RuntimeError(f"{path}: HTTP {self.response.status}: {self.response.read()[:200]!r}")
        self.events = events

    def next(self):
        while True:
            line = self.response.readline()
            if not line:
                raise RuntimeError("the stream ended")
            line = line.strip()
            if self.events:
                if not line.startswith(b"data: "):
                    continue
                line = line[len(b"data: "):]
            if line:
                return json.loads(line)

    def until(self, what, check):
        deadline = time.time() + 10
        while time.time() < deadline:
            message = self.next()
            if check(message):
                return message
        raise RuntimeError(f"no {what} within 10 s")


def post(base, path, body):
    request = urllib.request.Request(
        f"{base}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    base, secret, key = argv[1].rstrip("/"), argv[2], argv[3]
    channel = f"stream-check-{int(time.time() * 1000)}"
    connect = json.dumps({"id": 1, "connect": {"token": token(secret, "stream-check")}})
    streams = {
        "http_stream": Stream(base, "POST", "/connection/http_stream", connect, events=False),
        "sse": Stream(base, "GET", "/connection/sse?" + urllib.parse.urlencode({"cf_connect": connect}),
                      None, events=True),
    }
    for name, stream in streams.items():
        reply = stream.until("connect reply", lambda m: m.get("id") == 1)
        session, node = reply["connect"]["session"], reply["connect"]["node"]
        # Several POSTs: the first subscribes, the rest are pings' answers, harmless
        # wherever they land; each must reach the session's node.
        statuses = [post(base, "/emulation", {
            "node": node, "session": session,
            "data": json.dumps({"id": 2, "subscribe": {"channel": channel}})})]
        statuses += [post(base, "/emulation", {"node": node, "session": session, "data": "{}"})
                     for _ in range(5)]
        if statuses != [204] * 6:
            print(f"{name}: /emulation answered {statuses}, expected 204 each")
            return 1
        stream.until("subscribe reply", lambda m: m.get("id") == 2 and "subscribe" in m)
    api(base, key, "publish", {"channel": channel, "data": {"check": "streaming"}})
    for name, stream in streams.items():
        push = stream.until("publication", lambda m: m.get("push", {}).get("channel") == channel)
        if push["push"]["pub"]["data"] != {"check": "streaming"}:
            print(f"{name}: unexpected publication {push}")
            return 1
        print(f"{name}: connect, 6 commands through /emulation (204 each), publication received")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
