#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (committed; rerun after changing this).

Seeds are small, meaningful inputs: frames from the protocol documentation and the tests,
tokens and claims, server API bodies, envelopes as herald.lua packs them, and config files
from docs/configuration.md. Seeds kept from crashes live in the same folders under names
starting with `crash-` and are never rewritten here.
"""
import base64, hashlib, hmac, json, os, struct, sys, zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def clean(target):
    d = os.path.join(ROOT, target)
    if os.path.isdir(d):
        for n in os.listdir(d):
            if not n.startswith("crash-"):
                os.remove(os.path.join(d, n))


# ---------------------------------------------------------------- frame
FRAMES = {
    "pong": "{}",
    "connect": '{"id":1,"connect":{"token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.x","name":"js"}}',
    "connect-anon": '{"id":1,"connect":{"name":"go","version":"0.1","data":{"a":1}}}',
    "subscribe": '{"id":2,"subscribe":{"channel":"tasks:team-42"}}',
    "subscribe-recover": '{"id":3,"subscribe":{"channel":"tasks:team-42","recover":true,"offset":18,"epoch":"Xy12"}}',
    "subscribe-token-flags": '{"id":3,"subscribe":{"channel":"$secret","token":"t","flag":3,"join_leave":true,"positioned":true,"recoverable":true}}',
    "refresh": '{"id":4,"refresh":{"token":"new"}}',
    "sub-refresh": '{"id":5,"sub_refresh":{"channel":"$x","token":".."}}',
    "unsubscribe": '{"id":6,"unsubscribe":{"channel":"tasks:team-42"}}',
    "publish": '{"id":7,"publish":{"channel":"chat:1","data":{"text":"hi","n":123456789012345678901234567890}}}',
    "history": '{"id":8,"history":{"channel":"chat:1","limit":10,"since":{"offset":5,"epoch":"X"},"reverse":false}}',
    "presence": '{"id":9,"presence":{"channel":"chat:1"}}',
    "presence-stats": '{"id":10,"presence_stats":{"channel":"chat:1"}}',
    "rpc": '{"id":11,"rpc":{"method":"m","data":[1,2,3]}}',
    "send": '{"send":{"data":"fire and forget"}}',
    "batch": '{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"a"}}\n{"id":3,"subscribe":{"channel":"b"}}\n',
    "crlf": '{"id":1,"connect":{}}\r\n{"id":2,"presence":{"channel":"a"}}\r\n',
    "unknown-method": '{"id":7,"frobnicate":{}}',
    "two-methods": '{"id":7,"presence":{},"history":{}}',
    "null-data": '{"id":7,"publish":{"channel":"c","data":null}}',
    "unicode": '{"id":7,"publish":{"channel":"\\u00e9t\\u00e9","data":"\\ud83d\\ude00 \u00e9"}}',
    "big-id": '{"id":4294967295,"connect":{}}',
    # Server frames (decode_replies).
    "reply-connect": '{"id":1,"connect":{"client":"c1","version":"0.1.0","ping":25,"pong":true,"expires":true,"ttl":3580}}',
    "reply-subscribe": '{"id":2,"subscribe":{"recoverable":true,"positioned":true,"epoch":"Xy12","offset":17}}',
    "reply-recovered": '{"id":3,"subscribe":{"recoverable":true,"positioned":true,"epoch":"Xy12","offset":18,"was_recovering":true,"recovered":true,"publications":[{"data":{"a":1},"offset":19},{"data":{"b":2},"offset":20}]}}',
    "push-pub": '{"push":{"channel":"tasks:team-42","pub":{"data":{"task_id":9},"offset":18,"tags":{"k":"v"},"info":{"user":"42","client":"c"}}}}',
    "push-join-leave": '{"push":{"channel":"c","join":{"info":{"user":"1","client":"a"}}}}\n{"push":{"channel":"c","leave":{"info":{"user":"1","client":"a"}}}}',
    "push-unsubscribe": '{"push":{"channel":"c","unsubscribe":{"code":2500,"reason":"insufficient state"}}}',
    "push-disconnect": '{"push":{"disconnect":{"code":3001,"reason":"shutdown","reconnect":true}}}',
    "push-message": '{"push":{"message":{"data":{"x":1}}}}',
    "reply-error": '{"id":3,"error":{"code":107,"message":"bad request","temporary":false}}',
    "reply-history": '{"id":8,"history":{"publications":[{"data":1,"offset":6}],"epoch":"X","offset":20}}',
    "reply-presence": '{"id":9,"presence":{"presence":{"c1":{"user":"42","client":"c1","conn_info":{"n":1},"chan_info":[1]}}}}',
    "ping-pong": "{}\n{}\n",
    # Malformed, from frame.rs's tests.
    "bad-open": "{",
    "bad-array": "[]",
    "bad-negative-id": '{"id":-1}',
    "bad-channel-type": '{"id":1,"subscribe":{"channel":5}}',
    "bad-second-line": '{"id":1}\n{oops}',
    "bad-id-overflow": '{"id":4294967296,"connect":{}}',
}

# ---------------------------------------------------------------- jwt
# Flags byte: bit 0 subscription, bit 1 strict (aud/iss) verifier, bits 2-3 mode
# (0 raw token, 1 claims under a valid header, 2 header NUL claims), bits 4-5 algorithm.
SECRET = b"fuzz-secret-0123456789abcdef0123"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(header, claims, alg="HS256", key=SECRET):
    msg = b64(json.dumps(header, separators=(",", ":")).encode()) + "." + b64(
        json.dumps(claims, separators=(",", ":")).encode())
    h = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return msg + "." + b64(hmac.new(key, msg.encode(), h).digest())


def flags(sub=False, strict=False, mode=0, alg=0):
    return bytes([int(sub) | (int(strict) << 1) | (mode << 2) | (alg << 4)])


H = {"alg": "HS256", "typ": "JWT"}
JWT = {
    "raw-conn": flags() + token(H, {"sub": "42"}).encode(),
    "raw-conn-info": flags() + token(H, {"sub": "42", "exp": 4102444800, "info": {"name": "Ann"}, "channels": ["a", "b"]}).encode(),
    "raw-conn-hs384": flags() + token({"alg": "HS384", "typ": "JWT"}, {"sub": "1"}, "HS384").encode(),
    "raw-conn-hs512": flags() + token({"alg": "HS512"}, {"sub": "1", "expire_at": 0}, "HS512").encode(),
    "raw-conn-expired": flags() + token(H, {"sub": "1", "exp": 1}).encode(),
    "raw-conn-nbf": flags() + token(H, {"sub": "1", "nbf": 4102444800}).encode(),
    "raw-conn-wrong-key": flags() + token(H, {"sub": "1"}, key=b"another-secret-0123456789abcdef01").encode(),
    "raw-sub": flags(sub=True) + token(H, {"sub": "1", "channel": "$secret", "info": [1]}).encode(),
    "raw-sub-no-channel": flags(sub=True) + token(H, {"sub": "1"}).encode(),
    "raw-strict": flags(strict=True) + token(H, {"sub": "1", "aud": "herald", "iss": "auth.example"}).encode(),
    "raw-strict-aud-list": flags(strict=True) + token(H, {"sub": "1", "aud": ["x", "herald"], "iss": "auth.example"}).encode(),
    "raw-strict-wrong-iss": flags(strict=True) + token(H, {"sub": "1", "aud": "herald", "iss": "evil"}).encode(),
    "raw-alg-none": flags() + b"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0.",
    "raw-rs256-confusion": flags() + token({"alg": "RS256", "typ": "JWT"}, {"sub": "1"}).encode(),
    "raw-not-a-jwt": flags() + b"not a jwt",
    "raw-two-parts": flags() + b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0",
    "raw-bad-base64": flags() + b"e!J.e!J.e!J",
    "claims-sub": flags(mode=1) + b'{"sub":"42"}',
    "claims-full": flags(mode=1) + b'{"sub":"42","exp":4102444800,"iat":1,"info":{"name":"Ann"},"channels":["news","$private"],"expire_at":4102444800}',
    "claims-types": flags(mode=1) + b'{"sub":42,"exp":"soon","channels":"a"}',
    "claims-negative-exp": flags(mode=1) + b'{"sub":"1","exp":-5}',
    "claims-float-exp": flags(mode=1) + b'{"sub":"1","exp":1.5e10}',
    "claims-big-exp": flags(mode=1) + b'{"sub":"1","exp":18446744073709551615}',
    "claims-empty": flags(mode=1) + b"{}",
    "claims-array": flags(mode=1) + b"[1,2]",
    "claims-sub-token": flags(sub=True, mode=1) + b'{"sub":"1","channel":"$x","exp":4102444800,"info":null}',
    "claims-sub-expire-at": flags(sub=True, mode=1, alg=1) + b'{"channel":"c","expire_at":0}',
    "claims-strict": flags(strict=True, mode=1, alg=2) + b'{"sub":"1","aud":"herald","iss":"auth.example","nbf":1}',
    "claims-strict-missing": flags(strict=True, mode=1) + b'{"sub":"1"}',
    "header-typ": flags(mode=2) + b'{"alg":"HS256","typ":"JWT","kid":"k1"}\x00{"sub":"1"}',
    "header-alg-none": flags(mode=2) + b'{"alg":"none"}\x00{"sub":"1"}',
    "header-rs256": flags(mode=2) + b'{"alg":"RS256"}\x00{"sub":"1"}',
    "header-es256": flags(mode=2) + b'{"alg":"ES256"}\x00{"sub":"1"}',
    "header-eddsa": flags(mode=2) + b'{"alg":"EdDSA"}\x00{"sub":"1"}',
    "header-crit": flags(mode=2) + b'{"alg":"HS256","crit":["exp"],"b64":false}\x00{"sub":"1"}',
    "header-jwk": flags(mode=2) + b'{"alg":"HS256","jwk":{"kty":"oct","k":"AAAA"}}\x00{"sub":"1"}',
    "header-mismatch": flags(mode=2, alg=2) + b'{"alg":"HS256"}\x00{"sub":"1"}',
    "header-bad-json": flags(mode=2) + b'{"alg":\x00{"sub":"1"}',
}

# ---------------------------------------------------------------- api
# Selector byte: 0-11 a method (publish, broadcast, publish_entity, history,
# history_remove, presence, presence_stats, info, channels, disconnect, unsubscribe,
# batch), 12 the /api pipeline, 14 a method named by the first line.
ENTITY = '{"entity_type":"applications","entity_id":"42","action":"created","actor":"bob","version":3,"timestamp":1796582373193,"payload":{"name":"x"}}'
API = {
    "publish": (0, '{"channel":"chat:1","data":{"text":"hi"}}'),
    "publish-default-ns": (0, '{"channel":"news","data":{"n":123456789012345678901234567890},"idempotency_key":"k1","tags":{"a":"b"}}'),
    "publish-skip-history": (0, '{"channel":"news","data":1,"skip_history":true}'),
    "publish-no-data": (0, '{"channel":"news"}'),
    "publish-unknown-field": (0, '{"channel":"news","data":1,"extra":true}'),
    "publish-bare-ns": (0, '{"channel":"bare:x","data":"s"}'),
    "publish-user-limited": (0, '{"channel":"room#42,43","data":{}}'),
    "broadcast": (1, '{"channels":["a","b","chat:1"],"data":{"x":1},"idempotency_key":"k"}'),
    "broadcast-empty": (1, '{"channels":[],"data":1}'),
    "publish-entity": (2, '{"event":%s,"audiences":["public"],"idempotency_key":"e1"}' % ENTITY),
    "publish-entity-default": (2, '{"event":%s}' % ENTITY),
    "publish-entity-both": (2, '{"event":{"entity_type":"a","entity_id":"1","action":"deleted","actor":"","version":4,"timestamp":1,"payload":null},"audiences":["public","restricted"]}'),
    "publish-entity-bad": (2, '{"event":{"v":2}}'),
    "history": (3, '{"channel":"news","limit":10,"since":{"offset":1,"epoch":"e"},"reverse":true}'),
    "history-all": (3, '{"channel":"news","limit":-1}'),
    "history-bare": (3, '{"channel":"bare:x"}'),
    "history-remove": (4, '{"channel":"news"}'),
    "presence": (5, '{"channel":"news"}'),
    "presence-stats": (6, '{"channel":"news"}'),
    "info": (7, ""),
    "info-empty-object": (7, "{}"),
    "channels": (8, '{"pattern":"chat:*"}'),
    "channels-glob": (8, '{"pattern":"a*c*e"}'),
    "disconnect": (9, '{"user":"42"}'),
    "disconnect-code": (9, '{"user":"42","client":"c","disconnect":{"code":4000,"reason":"bye"}}'),
    "disconnect-bad-code": (9, '{"user":"42","disconnect":{"code":1000}}'),
    "unsubscribe": (10, '{"user":"42","channel":"news","client":"c"}'),
    "batch": (11, '{"commands":[{"publish":{"channel":"a","data":1}},{"history":{"channel":"a"}},{"info":{}}]}'),
    "batch-nested": (11, '{"commands":[{"batch":{"commands":[]}},{"publish":{},"info":{}},{}]}'),
    "not-json": (0, "{oops"),
    "not-utf8": (0, b"\xff\xfe"),
    "array-body": (0, "[1]"),
    "pipeline": (12, '{"method":"publish","params":{"channel":"a","data":1}}\n{"method":"info"}\n{"method":"nope","params":{}}\n'),
    "pipeline-bad": (12, '{"method":1}\n\n{oops}\n{"params":{}}'),
    "custom-unknown": (14, "frobnicate\n{}"),
    "custom-slash": (14, "pub/lish\n{}"),
    "custom-batch": (14, 'batch\n{"commands":[{"info":{}}]}'),
}

# ---------------------------------------------------------------- envelope
def mp_str(s):
    b = s.encode() if isinstance(s, str) else s
    if len(b) < 32:
        return bytes([0xA0 | len(b)]) + b
    if len(b) < 256:
        return b"\xd9" + bytes([len(b)]) + b
    return b"\xda" + struct.pack(">H", len(b)) + b


def mp_bin(b):
    b = b.encode() if isinstance(b, str) else b
    return b"\xc4" + bytes([len(b)]) + b


def mp_uint(n):
    if n < 128:
        return bytes([n])
    if n < 256:
        return b"\xcc" + bytes([n])
    if n < 65536:
        return b"\xcd" + struct.pack(">H", n)
    if n < 2**32:
        return b"\xce" + struct.pack(">I", n)
    return b"\xcf" + struct.pack(">Q", n)


def mp_arr(*items):
    return bytes([0x90 | len(items)]) + b"".join(items)


def env(offset, epoch, data, info="", tags="", enc=mp_str):
    return mp_arr(mp_uint(offset), enc(epoch), enc(data), enc(info), enc(tags))


INFO = '{"user":"42","client":"c1","conn_info":{"name":"Ann"},"chan_info":[1]}'
ENVELOPE = {
    "pub": env(7, "ep", '{"a":[1,2]}'),
    "pub-info-tags": env(18, "Xy12", '{"task_id":9}', INFO, '{"k":"v"}'),
    "pub-big-number": env(1, "e", "123456789012345678901234567890"),
    "pub-not-json": env(2, "e", "not json"),
    "pub-bad-info": env(3, "e", "1", "{oops", "[1]"),
    "pub-no-epoch": env(1, "", "null"),
    "pub-max-offset": env(2**64 - 1, "e", '"s"'),
    "pub-bin": env(5, "e", '{"b":true}', INFO, '{"a":"b"}', enc=mp_bin),
    "pub-latin1": env(5, b"\xe9p", b"\xe9t\xe9"),
    "pub-long": env(70000, "epoch-" + "x" * 40, json.dumps({"text": "y" * 300})),
    "join": mp_arr(mp_str("join"), mp_str(INFO)),
    "leave": mp_arr(mp_str("leave"), mp_str('{"user":"7","client":"c"}')),
    "join-empty": mp_arr(mp_str("join"), mp_str("")),
    "join-unknown-kind": mp_arr(mp_str("hello"), mp_str("{}")),
    "four-fields": mp_arr(mp_uint(1), mp_str("e"), mp_str("1"), mp_str("")),
    "six-fields": mp_arr(mp_uint(1), mp_str("e"), mp_str("1"), mp_str(""), mp_str(""), mp_str("")),
    "negative-offset": mp_arr(b"\xff", mp_str("e"), mp_str("1"), mp_str(""), mp_str("")),
    "map-envelope": b"\x81" + mp_str("offset") + mp_uint(1),
    "garbage": b"\xc1garbage",
    "truncated": env(7, "ep", '{"a":[1,2]}')[:-3],
    "stream-fields": b'{"x":1}\x00' + INFO.encode() + b'\x00{"t":"1"}',
    "stream-fields-bad": b"not json\x00{\x00[",
}

# ---------------------------------------------------------------- config
# Most seeds carry a token key, without which every configuration is refused (nobody could
# connect), so that the checks after that one are reached.
KEY = '[token]\nhmac_secret = "0123456789abcdef0123456789abcdef"\n'
CONFIG = {
    "empty": "",
    "key-only": KEY,
    "anonymous": "[client]\nallow_anonymous = true\n",
    "anonymous-env": "\x00CLIENT_ALLOW_ANONYMOUS=true\n",
    "reference": open(os.path.join(os.path.dirname(ROOT), "..", "docs", "configuration.md")).read().split("```toml\n")[-1].split("```")[0],
    "memory": 'listen = "127.0.0.1:8000"\nbroker = "memory"\n[token]\nhmac_secret = "0123456789abcdef0123456789abcdef"\n[api]\nkey = "k"\n',
    "redis": 'broker = "redis"\n[redis]\nurl = "redis://127.0.0.1:6379"\nprefix = "h"\nreplay_window = 0\nworkers = 1\n' + KEY,
    "redis-cluster": 'broker = "redis"\n[redis]\nurl = "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001&node=127.0.0.1:7002"\n' + KEY,
    "redis-missing-url": 'broker = "redis"\n' + KEY,
    "redis-tls": 'broker = "redis"\n[redis]\nurl = "rediss://h:6380"\n' + KEY,
    "deprecated": 'redis_url = "redis://127.0.0.1"\nredis_prefix = "p"\nredis_replay_window = 5\n' + KEY,
    "deprecated-both": 'redis_url = "redis://a"\n[redis]\nurl = "redis://b"\n' + KEY,
    "deprecated-redis-not-table": 'redis = 5\nredis_url = "redis://a"\n' + KEY,
    "bad-duration": '[client]\nping_interval = "soon"\npong_timeout = "30s"\n' + KEY,
    "bad-types": '[client]\nqueue_size = "big"\nallow_anonymous = "yes"\n[redis]\nworkers = "four"\n' + KEY,
    "pong-after-ping": '[client]\nping_interval = "5s"\npong_timeout = "8s"\n' + KEY,
    "unknown-key": 'frobnicate = 1\n[client]\nnope = 2\n' + KEY,
    "namespaces": '[namespaces.default]\nhistory_size = 100\nhistory_ttl = "5m"\npresence = true\n[namespaces.chat]\nallow_publish_for_client = true\njoin_leave = true\n[namespaces.entities]\nhistory_size = 10\nhistory_ttl = "1h"\n' + KEY,
    "namespace-bad": '[namespaces.x]\nhistory_size = -1\nhistory_ttl = "forever"\nbogus = true\n' + KEY,
    "namespace-not-table": 'namespaces = 3\n' + KEY,
    "shutdown": '[shutdown]\ndrain_window = "0s"\ntimeout = "1ms"\n' + KEY,
    "zero-values": '[client]\nqueue_size = 0\nmax_frame_bytes = 0\nwrite_interval = "0s"\nmax_channels = 0\n' + KEY,
    "huge-values": '[client]\nqueue_size = 9223372036854775807\nping_interval = "584942417355y"\n[redis]\nworkers = 100000\nreplay_window = 100001\n' + KEY,
    "bad-listen": 'listen = "nowhere"\nnode_name = "n"\nlog_format = "xml"\n' + KEY,
    "ipv6-listen": 'listen = "[::1]:0"\nlog_format = "json"\n' + KEY,
    "keys-files": '[token]\nrsa_public_key = "/nonexistent.pem"\nec_public_key = "/nonexistent2.pem"\naudience = "herald"\nissuer = "auth"\n',
    "not-toml": "[client\nping = ",
    "dotted-keys": 'client.ping_interval = "10s"\n"client".pong_timeout = "2s"\n' + KEY,
    "inline-tables": 'client = { ping_interval = "10s", pong_timeout = "2s" }\nredis = { url = "redis://x" }\n' + KEY,
    "array-of-tables": '[[client]]\nping_interval = "1s"\n',
    "env": KEY + '[client]\nping_interval = "25s"\n\x00CLIENT_PING_INTERVAL=10s\nCLIENT_ALLOW_ANONYMOUS=yes\nREDIS_WORKERS=8\nAPI_KEY=secret\n',
    "env-bad": '\x00CLIENT_PING_INTERVAL=soon\nCLIENT_QUEUE_SIZE=lots\nCLIENT_ALLOW_ANONYMOUS=maybe\nNOPE=1\nPORT=80\nSERVICE_HOST=x\n',
    "env-broker-redis": 'broker = "memory"\n' + KEY + '\x00BROKER=redis\nREDIS_URL=redis://127.0.0.1:6379\nLOG_FORMAT=json\n',
    "env-section": KEY + '\x00CLIENT=1\nNAMESPACES_DEFAULT_PRESENCE=true\n',
}


# ---------------------------------------------------------------- protobuf
# Length-delimited Protobuf messages as proto/client.proto numbers them (herald-protocol).
def pb_varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pb_field(num, value):
    """One field: ints as varints, str/bytes and nested messages (bytes) length-delimited."""
    if isinstance(value, bool) or isinstance(value, int):
        return pb_varint(num << 3) + pb_varint(int(value))
    if isinstance(value, str):
        value = value.encode()
    return pb_varint((num << 3) | 2) + pb_varint(len(value)) + value


def pb_msg(*fields):
    return b"".join(pb_field(n, v) for n, v in fields)


def pb_frame(*messages):
    return b"".join(pb_varint(len(m)) + m for m in messages)


PB_SUBSCRIBE_RECOVER = pb_msg((1, "tasks:team-42"), (3, True), (6, "Xy12"), (7, 18))
PB_PUBLICATION = pb_msg((4, b'{"task_id":9}'), (5, pb_msg((1, "42"), (2, "c1"))), (6, 18),
                        (7, pb_msg((1, "k"), (2, "v"))))
PROTOBUF = {
    # Client frames (Command).
    "pong": pb_frame(b""),
    "connect": pb_frame(pb_msg((1, 1), (4, pb_msg((1, "eyJhbGciOiJIUzI1NiJ9.e30.x"), (4, "js"))))),
    "connect-subs": pb_frame(pb_msg((1, 1), (4, pb_msg(
        (2, b'{"a":1}'), (3, pb_msg((1, "tasks:team-42"), (2, PB_SUBSCRIBE_RECOVER))),
        (6, pb_msg((1, "x-h"), (2, "v"))))))),
    "subscribe-recover": pb_frame(pb_msg((1, 3), (5, PB_SUBSCRIBE_RECOVER))),
    "batch": pb_frame(pb_msg((1, 1), (4, b"")), pb_msg((1, 2), (5, pb_msg((1, "news")))), b""),
    "publish": pb_frame(pb_msg((1, 7), (7, pb_msg((1, "chat:1"), (2, b'{"text":"hi"}'))))),
    "publish-keyed": pb_frame(pb_msg((1, 7), (7, pb_msg((1, "chat:1"), (2, b"[1]"), (1000, "k1"))))),
    "publish-not-json": pb_frame(pb_msg((1, 7), (7, pb_msg((1, "chat:1"), (2, b"\xff\x00"))))),
    "history": pb_frame(pb_msg((1, 8), (10, pb_msg((1, "chat:1"), (7, 10), (8, pb_msg((1, 5), (2, "X"))), (9, True))))),
    "presence": pb_frame(pb_msg((1, 9), (8, pb_msg((1, "chat:1")))), pb_msg((1, 10), (9, pb_msg((1, "chat:1"))))),
    "rpc-refresh-send": pb_frame(pb_msg((1, 11), (13, pb_msg((1, b"{}"), (2, "herald.ping")))),
                                 pb_msg((1, 12), (14, pb_msg((1, "t")))),
                                 pb_msg((1, 13), (15, pb_msg((1, "$x"), (2, "t")))),
                                 pb_msg((12, pb_msg((1, b'"m"'))))),
    "unknown-method": pb_frame(pb_msg((1, 9), (11, b""))),
    "bad-length": b"\x05\x08\x01",
    "bad-varint": b"\xff" * 11,
    "bad-wire-type": pb_frame(b"\x0a\x01x"),
    # Server frames (Reply).
    "ping": pb_frame(b""),
    "reply-connect": pb_frame(pb_msg((1, 1), (5, pb_msg((1, "c1"), (2, "0.1"), (7, 25), (8, True))))),
    "reply-error": pb_frame(pb_msg((1, 2), (2, pb_msg((1, 107), (2, "bad request"))))),
    "push-pub": pb_frame(pb_msg((4, pb_msg((2, "news"), (4, PB_PUBLICATION))))),
    "reply-history": pb_frame(pb_msg((1, 8), (11, pb_msg((1, PB_PUBLICATION), (2, "X"), (3, 18))))),
    "push-join-unsub": pb_frame(pb_msg((4, pb_msg((2, "news"), (5, pb_msg((1, pb_msg((1, "42")))))))),
                                pb_msg((4, pb_msg((2, "news"), (7, pb_msg((2, 2500), (3, "insufficient state"))))))),
}


# ---------------------------------------------------------------- dictionaries
# libFuzzer dictionaries (fuzz/dict/<target>.dict): the words the parsers look for.
FRAME_WORDS = ["id", "connect", "subscribe", "unsubscribe", "publish", "presence",
               "presence_stats", "history", "rpc", "send", "refresh", "sub_refresh",
               "channel", "data", "token", "name", "version", "recover", "offset", "epoch",
               "since", "limit", "reverse", "flag", "positioned", "recoverable",
               "join_leave", "push", "pub", "join", "leave", "message", "disconnect",
               "error", "code", "reason", "info", "tags", "publications", "client", "user",
               "conn_info", "chan_info", "was_recovering", "recovered", "expires", "ttl",
               "ping", "pong"]
API_WORDS = ["channel", "channels", "data", "tags", "idempotency_key", "skip_history",
             "event", "audiences", "public", "restricted", "limit", "since", "offset",
             "epoch", "reverse", "pattern", "user", "client", "disconnect", "code",
             "reason", "commands", "method", "params", "entity_type", "entity_id",
             "action", "created", "updated", "deleted", "actor", "version", "timestamp",
             "payload", "publish", "broadcast", "publish_entity", "history",
             "history_remove", "presence", "presence_stats", "info", "unsubscribe",
             "batch", "entities:", "bare:", "$", "#", "*"]
CONFIG_WORDS = ["listen", "node_name", "broker", "log_format", "[token]", "hmac_secret",
                "rsa_public_key", "ec_public_key", "audience", "issuer", "[api]", "key",
                "insecure", "[client]", "allow_anonymous", "ping_interval", "pong_timeout",
                "connect_timeout", "expire_grace", "queue_size", "max_frame_bytes",
                "write_batch_bytes", "max_channels", "presence_ttl", "read_buffer_bytes",
                "write_buffer_bytes", "write_interval", "socket_send_buffer_bytes",
                "channel_linger", "[shutdown]", "drain_window", "timeout", "[redis]", "url",
                "prefix", "replay_window", "meta_ttl", "idempotency_ttl", "command_timeout",
                "workers", "top_check_interval", "probe_interval", "probe_timeout",
                "[namespaces.default]", "[namespaces.", "history_size", "history_ttl",
                "presence", "join_leave", "allow_subscribe_for_client", "redis_url",
                "redis_prefix", "redis_replay_window", "\x00", "CLIENT_PING_INTERVAL=",
                "REDIS_WORKERS=", "BROKER=redis", "redis://", "redis-cluster://", "?node=",
                '"memory"', '"redis"', '"json"', '"5s"', '"10ms"', '"30days"', '"0s"',
                '"127.0.0.1:0"', '"[::1]:0"', " = ", "true", "false"]
# Fossil inputs: `source NUL patch-or-target`, patches in the format the SDKs apply.
KPI_A = '{"cpu":{"value":41,"unit":"%"},"mem":{"value":2048,"unit":"MB"},"note":"na\u00efve \u20ac"}'
KPI_B = KPI_A.replace("41", "57")
FOSSIL = {
    "patch-copy-insert": "0123456789abcdef\x00" + "j\n8@0,2:xy0;",
    "patch-bad-checksum": "abc\x00" + "3\n3@0,1;",
    "patch-huge-size": "abc\x00" + "~~~~~~~~~~~~\n3@0,0;",
    "target-similar": KPI_A + "\x00" + KPI_B,
    "target-text": "\x00" + "\u00e9\u00e9 \U0001F600 \u20ac plain",
    "target-empty-source": "the quick brown fox jumps over the lazy dog",
}
# WebSocket frame layer inputs: a flags byte (bit 0: deflate; bits 1-4: read size - 1),
# then masked client frames.
def ws_frame(opcode, payload, fin=True, rsv1=False, mask=b"\x11\x22\x33\x44"):
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def deflated(data):
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


WS_CONNECT = b'{"id":1,"connect":{"token":"x"}}'
WEBSOCKET = {
    "text": b"\x00" + ws_frame(1, WS_CONNECT),
    "fragments-and-ping": b"\x06" + ws_frame(1, b"caf\xc3", fin=False) + ws_frame(9, b"p")
    + ws_frame(0, b"\xa9 ok"),
    "compressed": b"\x01" + ws_frame(1, deflated(WS_CONNECT * 8), rsv1=True),
    "compressed-fragments": b"\x1f" + ws_frame(2, deflated(b"state " * 200)[:20], fin=False, rsv1=True)
    + ws_frame(0, deflated(b"state " * 200)[20:]),
    "close": b"\x00" + ws_frame(8, b"\x03\xe8bye"),
    "rsv1-without-deflate": b"\x00" + ws_frame(1, b"x", rsv1=True),
    "long-length": b"\x01" + ws_frame(2, b"\x00" * 300),
}
# Dictionary entries as the bytes they stand for.
DICTS = {
    "frame": ['"%s":' % w for w in FRAME_WORDS]
    + ["null", "true", "false", "4294967295", "\\u0000", "\\ud83d\\ude00", "\r\n"],
    "api": ['"%s":' % w for w in API_WORDS] + ["null", "true", "-1", "18446744073709551615"],
    "config": CONFIG_WORDS,
}


def dict_entry(word):
    out = []
    for b in word.encode():
        c = chr(b)
        if c in '\\"':
            out.append("\\" + c)
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append("\\x%02X" % b)
    return '"%s"' % "".join(out)


def write_dicts():
    d = os.path.join(os.path.dirname(ROOT), "dict")
    os.makedirs(d, exist_ok=True)
    for target, words in DICTS.items():
        with open(os.path.join(d, target + ".dict"), "w") as f:
            f.write("# libFuzzer dictionary for the %s target (written by make-seeds.py)\n" % target)
            for w in words:
                f.write(dict_entry(w) + "\n")


def main():
    write_dicts()
    for t in ("frame", "jwt", "api", "envelope", "config", "fossil", "protobuf", "websocket"):
        clean(t)
    for name, text in FRAMES.items():
        write("frame", name, text)
    for name, data in JWT.items():
        write("jwt", name, data)
    for name, (sel, body) in API.items():
        write("api", name, bytes([sel]) + (body if isinstance(body, bytes) else body.encode()))
    for name, data in ENVELOPE.items():
        write("envelope", name, data)
    for name, text in CONFIG.items():
        write("config", name, text)
    for name, text in FOSSIL.items():
        write("fossil", name, text)
    for name, data in PROTOBUF.items():
        write("protobuf", name, data)
    for name, data in WEBSOCKET.items():
        write("websocket", name, data)
    for t in sorted(os.listdir(ROOT)):
        print(t, len(os.listdir(os.path.join(ROOT, t))), "seeds")


if __name__ == "__main__":
    sys.exit(main())
