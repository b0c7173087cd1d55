#!/usr/bin/env python3
"""The kernel's share of one delivery on this machine, and the latency it leaves,
without any server.

One process holds N loopback TCP connections and sends a small message on each, round
after round (as a node fans one publication out to N subscribers); reader processes
read them all through epoll (as the load generator does). Each process's user and
system CPU time per message comes from getrusage. The sender's system time per send is
the floor under any server that writes each delivery to its own socket here: on
loopback the receiver's TCP processing and wake-up run inside the sender's send().
Each message carries its send time, so the readers also give the latency from the
start of a round to each delivery: what 1,000 sends in a row cost the last subscriber,
before any server code.

    scripts/send-floor.py [--conns 1000] [--readers 2] [--rounds 100] [--interval 0.1] [--size 100]

--interval 0.1 is the `latency` case's 10 publications a second (every reader asleep
when its message comes); --interval 0 sends round after round.
"""

import argparse
import json
import resource
import selectors
import socket
import subprocess
import sys
import time


def cpu_us():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime * 1e6, r.ru_stime * 1e6


def reader(port, conns, rounds, size):
    sel = selectors.DefaultSelector()
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
    print(json.dumps({"ready": True}), flush=True)
    expect = conns * rounds
    got = 0
    started = None
    latencies = []
    while got < expect:
        for key, _ in sel.select(timeout=30):
            data = key.fileobj.recv(65536)
            now = time.time_ns()
            if started is None:
                started = cpu_us()
            buf = key.data
            buf += data
            while len(buf) >= size:
                sent = int(buf[:20])
                del buf[:size]
                latencies.append((now - sent) / 1e6)
                got += 1
    user, sys_ = cpu_us()
    print(json.dumps({"user_us": user - started[0], "sys_us": sys_ - started[1],
                      "latencies_ms": latencies}), flush=True)


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--readers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--reader", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.size < 20:
        p.error("--size must be at least 20 (the send time)")
    if a.reader:
        reader(a.reader, a.conns, a.rounds, a.size)
        return

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    children = []
    conns = []
    for i in range(a.readers):
        share = a.conns // a.readers + (1 if i < a.conns % a.readers else 0)
        child = subprocess.Popen(
            [sys.executable, __file__, "--reader", str(port), "--conns", str(share),
             "--rounds", str(a.rounds), "--size", str(a.size)],
            stdout=subprocess.PIPE, text=True)
        for _ in range(share):
            s, _ = listener.accept()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns.append(s)
        json.loads(child.stdout.readline())
        children.append(child)
    # Every reader is registered and asleep in epoll before the first round.
    time.sleep(0.2)
    pad = b"x" * (a.size - 20)
    u0, s0 = cpu_us()
    for _ in range(a.rounds):
        msg = b"%020d" % time.time_ns() + pad
        for s in conns:
            s.send(msg)
        if a.interval:
            time.sleep(a.interval)
    u1, s1 = cpu_us()
    results = [json.loads(c.stdout.readline()) for c in children]
    for c in children:
        c.wait()
    sends = a.conns * a.rounds
    latencies = [v for r in results for v in r["latencies_ms"]]
    print(json.dumps({
        "conns": a.conns, "readers": a.readers, "rounds": a.rounds,
        "interval_s": a.interval, "size": a.size,
        "sender_sys_us_per_send": round((s1 - s0) / sends, 2),
        "sender_user_us_per_send": round((u1 - u0) / sends, 2),
        "reader_sys_us_per_message": round(sum(r["sys_us"] for r in results) / sends, 2),
        "reader_user_us_per_message": round(sum(r["user_us"] for r in results) / sends, 2),
        "lat_p50_ms": round(quantile(latencies, 0.5), 2),
        "lat_p99_ms": round(quantile(latencies, 0.99), 2),
        "lat_max_ms": round(max(latencies), 2),
    }))


if __name__ == "__main__":
    main()
