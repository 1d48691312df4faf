"""Forged and replayed heartbeats, sent to every router as if from its peers (source
address spoofed), until SIGTERM. Runs in the lab's client namespace:

    python bench/nemesis_forge.py --key KEYFILE --cluster default \\
        --routers r1=10.77.0.11,r2=10.77.0.12 [--replay FILE] [--seed N] [--every 0.05]

Three kinds: a heartbeat claiming the active role with a huge term under a wrong key (bad
MAC); one signed with the real key but of a run an hour old (what an attacker who
recorded the previous run would replay); and, with ``--replay``, real heartbeats captured
a moment earlier, sent again byte for byte from their senders' addresses. All must be
rejected and counted; none may move anything. The capture runs in a router's namespace:

    python bench/nemesis_forge.py --capture FILE --iface eth0 --seconds 1
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import random
import signal
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.heartbeat.config import load_secret
from agent.heartbeat.packet import Heartbeat, Incarnation, encode

PORT = 539


def packets(key: bytes, cluster: str, node: str, rng: random.Random) -> list[bytes]:
    now = time.time()
    forged = Heartbeat(cluster, node, Incarnation(int(now * 1000), rng.getrandbits(64)),
                       seq=rng.randint(1, 10**6), timestamp=now, role="active",
                       term=10**12, etcd_ok=True)
    old = now - 3600
    replayed = Heartbeat(cluster, node, Incarnation(int(old * 1000), rng.getrandbits(64)),
                         seq=7, timestamp=old + 7, role="active", term=1, etcd_ok=True)
    return [encode(forged, rng.randbytes(len(key) or 32)), encode(replayed, key)]


def datagram(src: str, dst: str, payload: bytes) -> bytes:
    """IPv4 + UDP from ``src`` (spoofed) to ``dst``, port 539 both ways. The kernel fills in
    the IP checksum, length and id of a raw IP_HDRINCL packet; UDP's checksum 0 is none."""
    udp = struct.pack("!HHHH", PORT, PORT, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, socket.IPPROTO_UDP, 0,
                     ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return ip + udp


def capture(path: str, iface: str, seconds: float) -> int:
    """Heartbeats this router receives on ``iface`` for ``seconds``, as JSON lines of
    source, destination and the datagram's payload (hex); how many."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    sock.bind((iface, 0))
    sock.settimeout(0.05)
    end, n = time.monotonic() + seconds, 0
    with open(path, "w") as out:
        while time.monotonic() < end:
            try:
                frame = sock.recv(65535)
            except TimeoutError:
                continue
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            if len(ip) < ihl + 8 or ip[9] != socket.IPPROTO_UDP:
                continue
            if struct.unpack("!H", ip[ihl + 2:ihl + 4])[0] != PORT:
                continue
            src, dst = (str(ipaddress.IPv4Address(ip[a:a + 4])) for a in (12, 16))
            out.write(json.dumps({"src": src, "dst": dst, "data": ip[ihl + 8:].hex()}) + "\n")
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--capture", help="capture mode: write heartbeats received here")
    ap.add_argument("--iface", default="eth0")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--replay", help="a --capture file to send again")
    ap.add_argument("--key")
    ap.add_argument("--cluster", default="default")
    ap.add_argument("--routers", default="", help="name=address,... (to send)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=float, default=0.05)
    args = ap.parse_args()
    if args.capture:
        print(capture(args.capture, args.iface, args.seconds))
        return
    key = load_secret(args.key)
    replay = []
    if args.replay:
        with open(args.replay) as f:
            replay = [json.loads(line) for line in f if line.strip()]
    routers = dict(item.split("=", 1) for item in args.routers.split(","))
    rng = random.Random(args.seed)
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    # a raw socket sends at once: no ARP wait in our process for a router that is down
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    while not stop:
        for sender, src in routers.items():
            for receiver, dst in routers.items():
                if receiver == sender:
                    continue
                for data in packets(key, args.cluster, sender, rng):
                    try:
                        sock.sendto(datagram(src, dst, data), (dst, 0))
                    except OSError:
                        pass  # a router unreachable now
        for old in replay:
            with contextlib.suppress(OSError):
                sock.sendto(datagram(old["src"], old["dst"], bytes.fromhex(old["data"])),
                            (old["dst"], 0))
        time.sleep(args.every)


if __name__ == "__main__":
    main()
