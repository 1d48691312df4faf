"""Watch who claims which IP on a link, and prove "never two owners" from the record.

Capture side (run inside a namespace, e.g. with :func:`start`)::

    python tests/support/arpwatch.py IFACE OUT.jsonl [--vip IP ...] [--probe IP ... [--every 0.02]]

records one JSON line per ARP request/reply (sender IP and MAC), IPv6 neighbour
solicitation (source, asked-for target) and advertisement (target and its link-layer
address) and, for the ``--vip`` addresses, any IP packet sent from them (its Ethernet
source), with ``time.monotonic()`` timestamps (the test's clock, taken by the kernel as the
frame passed). It prints ``ready`` once capturing and stops on SIGTERM/SIGINT. With
``--probe`` it also broadcasts an ARP request for each probed address every ``--every``
seconds (from the interface's MAC and IP) and records them as ``probe`` events: whoever holds
the address answers, so two owners show up within one period even if neither announces.

Analysis side (pure): :func:`ownership` turns such a record and the routers' MACs into
ownership intervals per VIP, the overlaps where two MACs claim one VIP, and the gaps.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import errno
import fcntl
import ipaddress
import itertools
import json
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35  # Linux; kernel receive time (CLOCK_REALTIME) as a control message
SIOCGIFADDR = 0x8915
# a sender of any of these says "my IP is at my MAC"
CLAIM_KINDS = frozenset({"arp-request", "arp-reply", "ns", "na", "ip4", "ip6"})


@dataclass(frozen=True)
class Event:
    """One observed claim: ``mac`` says it has ``ip`` at time ``t``."""

    t: float
    kind: str  # arp-request | arp-reply | ns | na | ip4 | ip6 | probe (ours, claims nothing)
    ip: str  # the claimed address: ARP sender, NS source, NA target, IP source; probe: asked
    mac: str  # where it is claimed to be: ARP sender MAC, ND option, Ethernet source
    target: str | None = None  # the address asked for (ARP request/reply, NS)
    out: bool = False  # sent by the watching host itself


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse_frame(frame: bytes, t: float, vips: frozenset[str] = frozenset(), out: bool = False,
                prober: str | None = None) -> Event | None:
    """The claim an Ethernet frame makes, or None (pure; junk gives None, never raises).

    ``prober``: our own IP when probing; an ARP request we sent from it is a ``probe``
    event (``ip`` = the address asked for, ``target`` = ours), not a claim.
    """
    try:
        event = _parse(frame, t, vips, out)
    except (struct.error, ValueError, IndexError):
        return None
    if event and prober and out and event.kind == "arp-request" and event.ip == prober:
        return Event(t, "probe", event.target or "", event.mac, prober, True)
    return event


def arp_request(mac: str, ip: str, target: str) -> bytes:
    """A broadcast ARP request "who has ``target``? tell ``ip`` at ``mac``" (pure)."""
    sha = bytes.fromhex(mac.replace(":", ""))
    spa, tpa = ipaddress.IPv4Address(ip).packed, ipaddress.IPv4Address(target).packed
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1) + sha + spa + b"\0" * 6 + tpa
    frame = b"\xff" * 6 + sha + struct.pack("!H", ETH_P_ARP) + arp
    return frame.ljust(60, b"\0")


def _parse(frame: bytes, t: float, vips: frozenset[str], out: bool) -> Event | None:
    eth_src = frame[6:12]
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    offset = 14
    if ethertype == ETH_P_8021Q:
        (ethertype,) = struct.unpack_from("!H", frame, 16)
        offset = 18
    if ethertype == ETH_P_ARP:
        htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, offset)
        if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4) or op not in (1, 2):
            return None
        base = offset + 8
        sha, spa = frame[base : base + 6], frame[base + 6 : base + 10]
        tpa = frame[base + 16 : base + 20]
        if len(tpa) != 4:
            return None
        sender = str(ipaddress.IPv4Address(spa))
        if sender == "0.0.0.0":  # an address probe claims nothing
            return None
        kind = "arp-request" if op == 1 else "arp-reply"
        return Event(t, kind, sender, _mac(sha), str(ipaddress.IPv4Address(tpa)), out)
    if ethertype == ETH_P_IPV6:
        next_header = frame[offset + 6]
        src = str(ipaddress.IPv6Address(frame[offset + 8 : offset + 24]))
        icmp = offset + 40
        if next_header == 58 and frame[icmp] == 136:  # neighbour advertisement
            target = str(ipaddress.IPv6Address(frame[icmp + 8 : icmp + 24]))
            lladdr = _lladdr_option(frame[icmp + 24 :], 2) or eth_src
            return Event(t, "na", target, _mac(lladdr), None, out)
        if next_header == 58 and frame[icmp] == 135:  # solicitation: src asks for target
            if src == "::":  # duplicate address detection claims nothing
                return None
            target = str(ipaddress.IPv6Address(frame[icmp + 8 : icmp + 24]))
            lladdr = _lladdr_option(frame[icmp + 24 :], 1) or eth_src
            return Event(t, "ns", src, _mac(lladdr), target, out)
        if src in vips:
            return Event(t, "ip6", src, _mac(eth_src), None, out)
        return None
    if ethertype == ETH_P_IP and vips:
        src = str(ipaddress.IPv4Address(frame[offset + 12 : offset + 16]))
        if src in vips:
            return Event(t, "ip4", src, _mac(eth_src), None, out)
    return None


def _lladdr_option(options: bytes, wanted: int) -> bytes | None:
    """The link-layer address in ND option ``wanted`` (1 = source, 2 = target)."""
    while len(options) >= 8:
        kind, length = options[0], options[1] * 8
        if length == 0:
            return None
        if kind == wanted:
            return options[2:8]
        options = options[length:]
    return None


def read_events(path: str | Path) -> list[Event]:
    """Events of a JSON lines record, in time order (unreadable lines are skipped)."""
    events = []
    for line in Path(path).read_text().splitlines():
        try:
            events.append(Event(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return sorted(events, key=lambda e: e.t)


# ---------------------------------------------------------------- analysis (pure)


@dataclass(frozen=True)
class Interval:
    """``mac`` claimed the VIP from ``start`` to ``end`` (claims never more than hold apart)."""

    mac: str
    start: float
    end: float
    claims: int


@dataclass(frozen=True)
class Overlap:
    """Two MACs both claimed the VIP during [start, end]."""

    macs: tuple[str, str]
    start: float
    end: float


@dataclass(frozen=True)
class Gap:
    """Nobody claimed the VIP during (start, end)."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Ownership:
    """Who held one VIP when, according to the claims seen."""

    ip: str
    intervals: tuple[Interval, ...]
    overlaps: tuple[Overlap, ...]
    gaps: tuple[Gap, ...]
    foreign: tuple[Event, ...]  # claims of this VIP by MACs that are not routers
    probes: int = 0  # ARP requests our prober sent for it
    blind: tuple[Gap, ...] = ()  # stretches longer than hold without a probe (watcher stalled)

    def owners_at(self, t: float) -> set[str]:
        return {i.mac for i in self.intervals if i.start <= t <= i.end}

    def owners_during(self, start: float, end: float) -> set[str]:  # at some time in it
        return {i.mac for i in self.intervals if i.start <= end and i.end >= start}

    def gaps_during(self, start: float, end: float) -> tuple[Gap, ...]:  # intersecting it
        return tuple(g for g in self.gaps if g.start <= end and g.end >= start)

    @property
    def owners(self) -> list[str]:
        """The succession of owners (consecutive repeats collapsed)."""
        seq: list[str] = []
        for interval in self.intervals:
            if not seq or seq[-1] != interval.mac:
                seq.append(interval.mac)
        return seq


def ownership(events: Iterable[Event], router_macs: Iterable[str], *,
              vips: Iterable[str] | None = None, hold: float = 1.0) -> dict[str, Ownership]:
    """Ownership of each VIP from claims by ``router_macs``.

    Claims of one MAC no more than ``hold`` seconds apart form one interval [first, last]
    (pick ``hold`` above the period of the traffic the test makes the owner send, e.g. 3-5
    probe periods). Two intervals of different MACs that intersect are an :class:`Overlap`
    - an instant with two owners. Uncovered stretches between the first and the last claim
    are :class:`Gap` s. ``vips`` defaults to every IP a router claimed.

    An answer to our probe proves ownership at some instant between probe and answer, so
    its claim starts at the probe: two MACs answering one probe overlap.
    """
    routers = {m.lower() for m in router_macs}
    events = list(events)
    claims = [e for e in events if e.kind in CLAIM_KINDS]
    probes: dict[str, list[float]] = {}
    askers = set()
    for e in events:
        if e.kind == "probe":
            probes.setdefault(e.ip, []).append(e.t)
            askers.add(e.target)
    wanted = set(vips) if vips is not None else {e.ip for e in claims if e.mac in routers}
    result = {}
    for ip in sorted(wanted):
        mine = sorted((e for e in claims if e.ip == ip), key=lambda e: e.t)
        asked = sorted(probes.get(ip, []))
        spans = [(_asked_at(e, asked, askers, hold), e) for e in mine if e.mac in routers]
        intervals = _intervals(spans, hold)
        result[ip] = Ownership(
            ip=ip,
            intervals=intervals,
            overlaps=_overlaps(intervals),
            gaps=_gaps(intervals, asked),
            foreign=tuple(e for e in mine if e.mac not in routers),
            probes=len(asked),
            blind=tuple(Gap(a, b) for a, b in itertools.pairwise(asked) if b - a > hold),
        )
    return result


def _asked_at(claim: Event, asked: list[float], askers: set[str | None], hold: float) -> float:
    """When the question ``claim`` answers was asked (the claim's own time if none)."""
    if claim.kind != "arp-reply" or claim.target not in askers:
        return claim.t
    i = bisect.bisect_right(asked, claim.t) - 1
    return asked[i] if i >= 0 and claim.t - asked[i] <= hold else claim.t


def _intervals(spans: list[tuple[float, Event]], hold: float) -> tuple[Interval, ...]:
    open_: dict[str, list[float]] = {}  # mac -> [start, end, count]
    done: list[Interval] = []
    for start, event in spans:
        run = open_.get(event.mac)
        if run is not None and start - run[1] <= hold:
            run[0], run[1], run[2] = min(run[0], start), max(run[1], event.t), run[2] + 1
            continue
        if run is not None:
            done.append(Interval(event.mac, run[0], run[1], int(run[2])))
        open_[event.mac] = [start, event.t, 1]
    done.extend(Interval(mac, r[0], r[1], int(r[2])) for mac, r in open_.items())
    return tuple(sorted(done, key=lambda i: (i.start, i.end, i.mac)))


def _overlaps(intervals: tuple[Interval, ...]) -> tuple[Overlap, ...]:
    found = []
    for i, a in enumerate(intervals):
        for b in intervals[i + 1 :]:
            if b.start > a.end:
                break  # sorted by start: no later interval can meet a
            if a.mac != b.mac:
                found.append(Overlap((a.mac, b.mac), b.start, min(a.end, b.end)))
    return tuple(found)


def _gaps(intervals: tuple[Interval, ...], asked: list[float]) -> tuple[Gap, ...]:
    """Uncovered stretches; with probes, only those in which a probe went unanswered (a
    stretch without any probe means the prober stalled, not that nobody owned the VIP)."""
    gaps = []
    covered_to: float | None = None
    for interval in intervals:
        i = bisect.bisect_right(asked, covered_to or 0.0)  # the first probe after it
        if covered_to is not None and interval.start > covered_to and (
            not asked or (i < len(asked) and asked[i] < interval.start)
        ):
            gaps.append(Gap(covered_to, interval.start))
        covered_to = interval.end if covered_to is None else max(covered_to, interval.end)
    return tuple(gaps)


# ---------------------------------------------------------------- capture (shell)


def interface_ipv4(iface: str) -> str:
    """The (primary) IPv4 address of ``iface``; OSError if it has none."""
    req = struct.pack("256s", iface.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return socket.inet_ntoa(fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)[20:24])


def capture(iface: str, out_path: str, vips: Iterable[str] = (), probe: Iterable[str] = (),
            every: float = 0.02) -> int:
    """Record claims seen on ``iface`` to ``out_path`` until SIGTERM/SIGINT; returns a count.

    ``probe``: IPv4 addresses to ask for every ``every`` seconds (ARP requests from the
    interface's MAC and IPv4 address); the requests and their answers are recorded.
    """
    watched = frozenset(ipaddress.ip_address(v).compressed for v in vips)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    probe = [str(ipaddress.IPv4Address(p)) for p in probe]
    source = interface_ipv4(iface) if probe else None
    frames = [arp_request(_mac(sock.getsockname()[4]), source, p) for p in probe if source]
    # A packet socket never sees its own frames: send from another, so the probes are
    # recorded like any frame, with the kernel's timestamp (one clock for both sides).
    sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sender.bind((iface, 0) if frames else ("lo", 0))
    offset = time.time() - time.monotonic()  # kernel timestamps are CLOCK_REALTIME
    next_probe = time.monotonic()
    count = 0
    with open(out_path, "a", buffering=1) as out:
        print("ready", flush=True)
        while not stop:
            now = time.monotonic()
            if frames and now >= next_probe:
                for frame in frames:
                    try:
                        sender.send(frame)
                    except OSError:
                        pass  # link down: nothing to ask through; the gap shows it
                next_probe = max(next_probe + every, now)
            sock.settimeout(max(0.001, next_probe - now) if frames else 0.1)
            try:
                frame, anc, _flags, addr = sock.recvmsg(65535, socket.CMSG_SPACE(16))
            except (TimeoutError, InterruptedError):
                continue
            except OSError as exc:  # our own link went down (a flapping host): wait
                if exc.errno != errno.ENETDOWN:
                    raise
                time.sleep(every)
                continue
            t = _kernel_time(anc, offset)
            event = parse_frame(frame, t, watched, addr[2] == PACKET_OUTGOING, source)
            if event is not None:
                out.write(json.dumps(asdict(event)) + "\n")
                count += 1
    sock.close()
    sender.close()
    return count


def _kernel_time(anc: list[tuple[int, int, bytes]], offset: float) -> float:
    """The frame's kernel timestamp on the monotonic clock (now if there is none)."""
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec + nsec / 1e9 - offset
    return time.monotonic()


def argv(iface: str, out_path: str | Path, vips: Iterable[str] = (), probe: Iterable[str] = (),
         every: float = 0.02) -> list[str]:
    """The command line running a watcher (put ``ip netns exec NS`` in front)."""
    return [sys.executable, __file__, iface, str(out_path), *(f"--vip={v}" for v in vips),
            *(f"--probe={p}" for p in probe), f"--every={every}"]


async def start(lab, ns: str, iface: str, out_path: str | Path, vips: Iterable[str] = (),
                probe: Iterable[str] = ()):
    """Start a watcher in lab namespace ``ns`` (a :class:`netlab.Lab`); returns once ready."""
    cmd = argv(iface, out_path, vips, probe)
    proc = await lab.spawn(ns, *cmd, stdout=asyncio.subprocess.PIPE)
    line = await asyncio.wait_for(proc.stdout.readline(), 15)
    if line.strip() != b"ready":
        proc.kill()
        raise RuntimeError(f"arpwatch in {ns} did not start: {line!r}")
    return proc


async def stop(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """Stop a watcher started by :func:`start` (its record is complete afterwards)."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("iface")
    parser.add_argument("out")
    parser.add_argument("--vip", action="append", default=[], help="also record IP sent from it")
    parser.add_argument("--probe", action="append", default=[], help="ask for this IPv4 often")
    parser.add_argument("--every", type=float, default=0.02, help="probe period (seconds)")
    ns = parser.parse_args(args)
    capture(ns.iface, ns.out, ns.vip, ns.probe, ns.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
