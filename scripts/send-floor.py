#!/usr/bin/env python3
"""The kernel's share of one delivery on this machine, without any server.

One process holds N loopback TCP connections and sends a small message on each, round
after round (as a node fans one publication out to N subscribers); a second process
reads them all through epoll (as the load generator does). Each process's user and
system CPU time per message comes from getrusage. The sender's system time per send is
the floor under any server that writes each delivery to its own socket here: on
loopback the receiver's TCP processing and wake-up run inside the sender's send().

    scripts/send-floor.py [--conns 1000] [--rounds 200] [--interval 0.1] [--size 100]

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


def reader(port, conns, expect):
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    print(json.dumps({"ready": True}), flush=True)
    got = 0
    started = None
    while got < expect:
        for key, _ in sel.select(timeout=30):
            data = key.fileobj.recv(65536)
            if started is None:
                started = cpu_us()
            got += len(data)
    user, sys_ = cpu_us()
    print(json.dumps({"user_us": user - started[0], "sys_us": sys_ - started[1]}), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--reader", type=int, help=argparse.SUPPRESS)
    p.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.reader:
        reader(a.reader, a.conns, a.expect)
        return

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    expect = a.conns * a.rounds * a.size
    child = subprocess.Popen(
        [sys.executable, __file__, "--reader", str(port), "--conns", str(a.conns),
         "--expect", str(expect)],
        stdout=subprocess.PIPE, text=True)
    conns = []
    for _ in range(a.conns):
        s, _ = listener.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(s)
    json.loads(child.stdout.readline())
    msg = b"x" * a.size
    # Every reader is registered and asleep in epoll before the first round.
    time.sleep(0.2)
    u0, s0 = cpu_us()
    for _ in range(a.rounds):
        for s in conns:
            s.send(msg)
        if a.interval:
            time.sleep(a.interval)
    u1, s1 = cpu_us()
    result = json.loads(child.stdout.readline())
    child.wait()
    sends = a.conns * a.rounds
    print(json.dumps({
        "conns": a.conns, "rounds": a.rounds, "interval_s": a.interval, "size": a.size,
        "sender_sys_us_per_send": round((s1 - s0) / sends, 2),
        "sender_user_us_per_send": round((u1 - u0) / sends, 2),
        "reader_sys_us_per_message": round(result["sys_us"] / sends, 2),
        "reader_user_us_per_message": round(result["user_us"] / sends, 2),
    }))


if __name__ == "__main__":
    main()
