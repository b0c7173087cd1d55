"""Drives a running Herald gateway through the paths that create its labelled metric
series, so a scrape afterwards shows every series a production node would export.

    traffic.py BASE_URL HMAC_SECRET API_KEY [--broken-channel CHANNEL]

Over the server API: publish, broadcast, history. Over a raw WebSocket (protocol v2,
JSON): connect; subscribe with recovery that succeeds, and one that cannot (a wrong
epoch); subscribe to an unknown namespace (error 102); an unknown method (104); then a
malformed frame, which the server answers by closing with 3501. --broken-channel
publishes to a channel whose Redis meta key the caller has corrupted, so the broker
fails and the error counter gets its series. Python standard library only.
"""

import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import time
import urllib.parse
import urllib.request


def api(base, key, method, params):
    request = urllib.request.Request(
        f"{base}/api/{method}", data=json.dumps(params).encode(),
        headers={"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def token(secret, user):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": user, "exp": int(time.time()) + 600}).encode())
    signature = hmac.new(secret.encode(), header + b"." + claims, hashlib.sha256).digest()
    return (header + b"." + claims + b"." + b64(signature)).decode()


class WebSocket:
    """The client half of RFC 6455: text frames out (masked), frames in."""

    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"no upgrade: {head.decode(errors='replace').splitlines()[0]}")

    def send(self, text):
        payload = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("connection closed")
            data += chunk
        return data

    def frame(self):
        """(opcode, payload) of the next frame."""
        b0, b1 = self._exact(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._exact(8))[0]
        return b0 & 0x0F, self._exact(length)

    def reply(self, command_id):
        """The reply to command_id, skipping pushes and pings."""
        while True:
            opcode, payload = self.frame()
            if opcode == 8:
                raise ConnectionError(f"closed: {payload[:2].hex()} {payload[2:].decode()}")
            for line in payload.decode().splitlines():
                message = json.loads(line)
                if message.get("id") == command_id:
                    return message

    def close_code(self):
        """Reads until the server closes; returns its close code."""
        while True:
            opcode, payload = self.frame()
            if opcode == 8:
                return struct.unpack("!H", payload[:2])[0]


def main(argv):
    if len(argv) not in (4, 6):
        sys.exit(__doc__)
    base, secret, key = argv[1].rstrip("/"), argv[2], argv[3]
    broken = argv[5] if len(argv) == 6 and argv[4] == "--broken-channel" else None

    first = api(base, key, "publish", {"channel": "news", "data": {"n": 1}})["result"]
    api(base, key, "publish", {"channel": "news", "data": {"n": 2}})
    api(base, key, "broadcast", {"channels": ["news", "other"], "data": {"all": True}})
    api(base, key, "history", {"channel": "news", "limit": 10})

    ws = WebSocket(base.replace("http://", "ws://") + "/connection/websocket")
    ws.send(json.dumps({"id": 1, "connect": {"token": token(secret, "validate"), "name": "validate"}}))
    assert "connect" in ws.reply(1), "connect failed"
    ws.send(json.dumps({"id": 2, "subscribe": {"channel": "news", "recover": True,
                                                "offset": first["offset"], "epoch": first["epoch"]}}))
    recovered = ws.reply(2)["subscribe"]
    assert recovered.get("recovered"), f"expected a recovery: {recovered}"
    ws.send(json.dumps({"id": 3, "subscribe": {"channel": "other", "recover": True,
                                                "offset": 1, "epoch": "not-the-epoch"}}))
    assert not ws.reply(3)["subscribe"].get("recovered")
    ws.send(json.dumps({"id": 4, "subscribe": {"channel": "nosuchnamespace:x"}}))
    assert ws.reply(4)["error"]["code"] == 102
    ws.send(json.dumps({"id": 5, "nosuchmethod": {}}))
    assert ws.reply(5)["error"]["code"] == 104
    api(base, key, "publish", {"channel": "news", "data": {"n": 3}})  # a live delivery
    ws.send("this is not JSON")
    code = ws.close_code()
    assert code == 3501, f"expected close 3501, got {code}"

    if broken:
        try:
            reply = api(base, key, "publish", {"channel": broken, "data": {"n": 0}})
        except urllib.error.HTTPError as e:
            reply = json.load(e)
        assert "error" in reply, f"publish to the broken channel succeeded: {reply}"
    print("  traffic: publish, broadcast, history, connect, recover (both outcomes), "
          "errors 102/104, close 3501" + (", a broker error" if broken else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
