"""Forged and replayed heartbeats, sent to every router as if from its peers (source
address spoofed), until SIGTERM. Runs in the lab's client namespace:

    python bench/nemesis_forge.py --key KEYFILE --cluster default \\
        --routers r1=10.77.0.11,r2=10.77.0.12 [--seed N] [--every 0.05]

Two kinds, alternately: a heartbeat claiming the active role with a huge term under a
wrong key (bad MAC), and one signed with the real key but of a run an hour old with an
old timestamp (what an attacker who recorded the previous run would replay). Both must be
rejected and counted (``lvs_heartbeat_rejected``); neither may move anything.
"""

from __future__ import annotations

import argparse
import ipaddress
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--key", required=True)
    ap.add_argument("--cluster", default="default")
    ap.add_argument("--routers", required=True, help="name=address,...")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=float, default=0.05)
    args = ap.parse_args()
    key = load_secret(args.key)
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
        time.sleep(args.every)


if __name__ == "__main__":
    main()
