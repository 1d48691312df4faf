"""Nudge the connections a new active took over, so that they resume at once.

A crash failover leaves a gap of a second or two in which the clients' segments (and the
real servers' replies) are lost. Each end's TCP backs its retransmission timer off
(0.2, 0.4, 0.8, 1.6 s ...), so a connection whose state the new active holds (conntrackd,
the IPVS sync daemon) still waits up to one more doubling after the VIP is back: 3.2 s
stalls after a 2.2 s gap, measured. Right after taking the VIPs, :class:`Resumer` sends
the probes of :mod:`agent.resume.flows` from a raw socket (marked, and not tracked by
conntrack: table ``ip piranha_resume``), reads the challenge ACKs from a packet socket for
at most ``window`` seconds, and nudges each end the moment its peer's answer arrives (a
connection closed since, whose ends never answer, holds nobody up). Every packet goes out
only while we hold the licence, checked at each batch and each answer. Best effort: a
failure is counted and logged, never fatal. IPv4 only (Linux implements RFC 6069 for IPv4).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent.dataplane.nft.libnft import LibNft

from .flows import Flow, Packet, nudges, probes
from .packets import tcp_ack_fields

log = logging.getLogger(__name__)

MARK = 0x70726D65  # "prme": our packets, not tracked
TABLE = "ip piranha_resume"
SETUP = (f"add table {TABLE}\ndelete table {TABLE}\nadd table {TABLE}\n"
         f"add chain {TABLE} out {{ type filter hook output priority raw; policy accept; }}\n"
         f"add rule {TABLE} out meta mark {MARK:#x} notrack\n")
ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
BATCH = 64  # packets sent between two looks at the licence
CHUNK = 256  # connections whose packets are built at a time (never a long pause to build)
YIELD = 0.01  # seconds of sending after which the event loop gets a turn (only then:
# each turn lets the takeover's other work run first and delays the nudges behind it)
#: ICMPs per end sent the moment its peer answers: enough for a gap of up to 3 s (timer
#: backed off 4 times from 200 ms); the rest of ``count`` follows once every end answered,
#: so the last connection is not kept waiting by the others' later reverts.
FIRST = 4
# Classic BPF on a SOCK_DGRAM packet socket (the IP header at offset 0): TCP with ACK set.
Acks = dict[tuple[Flow, str], int]  # (flow, the end that answered) -> its ACK number
_FILTER = ((0x30, 0, 0, 9), (0x15, 0, 4, 6), (0xB1, 0, 0, 0), (0x50, 0, 0, 13),
           (0x45, 0, 1, 0x10), (0x06, 0, 0, 128), (0x06, 0, 0, 0))


@dataclass
class ResumeStats:
    """Counters for /metrics (``lvs_resume_*``)."""

    runs: int = 0
    flows: int = 0  # connections found to nudge
    answered: int = 0  # ends whose challenge ACK we read
    nudged: int = 0  # ends sent ICMP host unreachable
    skipped: int = 0  # connections beyond ``max_flows``
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # duration of the newest run

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Resumer:
    """Nudges in this network namespace. ``await resume(flows, licence)`` per takeover."""

    def __init__(self, *, window: float = 0.2, count: int = 8, max_flows: int = 20_000,
                 patience: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        # A stall may cost the licence for a moment (until the lease confirms again): the
        # connections still wait, so we wait this long for it before giving up.
        self.patience = patience
        self.count = count  # ICMPs per end: each undoes one doubling of its timer
        self.max_flows = max_flows
        self.clock = clock
        self.stats = ResumeStats()
        self._lib: LibNft | None = None
        self._table = False
        self._turn = 0.0  # when the event loop last had a turn during a run

    async def resume(self, flows: Sequence[Flow], licence: Callable[[], float]) -> int:
        """Probe and nudge ``flows`` while licensed; the number of ends nudged."""
        if not flows:
            return 0
        start = self.clock()
        self.stats.runs += 1
        if len(flows) > self.max_flows:
            self.stats.skipped += len(flows) - self.max_flows
            log.warning("resume: %d connections, nudging the first %d", len(flows),
                        self.max_flows)
            flows = sorted(flows)[: self.max_flows]
        self.stats.flows += len(flows)
        # Off the event loop: libnftables lists the data plane's whole table first.
        if not (self._table or await asyncio.to_thread(self._notrack)):
            return 0
        try:
            capture, raw = _capture_socket(), _raw_socket()
        except OSError as exc:
            self.stats.error("socket")
            log.error("resume: no raw or packet socket (%s): connections resume at their "
                      "own next retransmission", exc)
            return 0
        with capture, raw:
            acks, ends = await self._run(flows, capture, raw, licence)
        self.stats.answered += len(acks)
        self.stats.nudged += ends
        self.stats.seconds = self.clock() - start
        log.info("resume: %d connections, %d ends answered, %d nudged (%.0f ms)",
                 len(flows), len(acks), ends, self.stats.seconds * 1000)
        return ends

    async def _run(self, flows: Sequence[Flow], capture: socket.socket, raw: socket.socket,
                   licence: Callable[[], float]) -> tuple[Acks, int]:
        """Probe every end; nudge each end's peer the moment its answer arrives (an end
        that never answers, a connection closed since, holds nobody up)."""
        keys = {k: (f, side) for f in flows for k, side in f.keys().items()}
        acks: Acks = {}
        first: Acks = {}  # the ends nudged the moment their peer answered
        done = asyncio.Event()

        def readable() -> None:
            licensed = self.clock() < licence()
            while True:
                try:
                    pkt = capture.recv(256)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    self.stats.error("capture")
                    return
                fields = tcp_ack_fields(pkt)
                hit = keys.get((fields[0], fields[1])) if fields else None
                if hit is None or hit in acks:
                    continue
                acks[hit] = fields[2]  # type: ignore[index]
                if licensed:
                    first[hit] = acks[hit]
                    for dst, out in nudges((hit[0],), {hit: acks[hit]}, min(FIRST, self.count)):
                        self._sendto(raw, out, dst)
                if len(acks) == 2 * len(flows):
                    done.set()

        loop = asyncio.get_running_loop()
        loop.add_reader(capture.fileno(), readable)
        self._turn = self.clock()
        try:
            if await self._send_built(raw, flows, probes, licence):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), self.window)
        finally:
            loop.remove_reader(capture.fileno())
        # The remaining reverts (longer gaps), and whole nudges for the answers that came
        # while the licence was out.
        late = {hit: ack for hit, ack in acks.items() if hit not in first}

        def rest(chunk: Sequence[Flow]) -> list[Packet]:
            return (nudges(chunk, first, self.count - min(FIRST, self.count))
                    + nudges(chunk, late, self.count))

        if not await self._send_built(raw, flows, rest, licence):
            return acks, len(first)
        return acks, len(first) + len(late)

    async def _send_built(self, raw: socket.socket, flows: Sequence[Flow],
                          build: Callable[[Sequence[Flow]], list[Packet]],
                          licence: Callable[[], float]) -> bool:
        """Build and send the packets of ``flows`` :data:`CHUNK` connections at a time."""
        for i in range(0, len(flows), CHUNK):
            if not await self._send(raw, build(flows[i:i + CHUNK]), licence):
                return False
        return True

    def _sendto(self, raw: socket.socket, pkt: bytes, dst: str) -> None:
        try:
            raw.sendto(pkt, (dst, 0))
        except OSError as exc:
            self.stats.error(type(exc).__name__)

    async def _send(self, raw: socket.socket, out: list[Packet],
                    licence: Callable[[], float]) -> bool:
        for i in range(0, len(out), BATCH):
            if self.clock() >= licence() and not await self._licensed(licence):
                log.warning("resume: no licence for %g s: %d packets not sent", self.patience,
                            len(out) - i)
                return False
            for dst, pkt in out[i:i + BATCH]:
                self._sendto(raw, pkt, dst)
            if self.clock() - self._turn > YIELD:
                await asyncio.sleep(0)
                self._turn = self.clock()
        return True

    async def _licensed(self, licence: Callable[[], float]) -> bool:
        """Licensed now, or again within ``patience`` seconds."""
        until = self.clock() + self.patience
        while self.clock() >= licence():
            if self.clock() >= until:
                return False
            await asyncio.sleep(0.05)
        return True

    def _notrack(self) -> bool:
        """Our packets must bypass conntrack (a SYN of a flow it tracks would clash)."""
        if self._table:
            return True
        if self._lib is None:
            self._lib = LibNft.load()
        rc, _, err = self._lib.run(SETUP) if self._lib else (1, "", "libnftables not found")
        if rc != 0:
            self.stats.error("nftables")
            log.error("resume: cannot set up table %s: %s", TABLE, err.strip())
            return False
        self._table = True
        return True

    def close(self) -> None:
        if self._lib is not None:
            if self._table:
                self._lib.run(f"delete table {TABLE}\n")
            self._lib.close()
            self._lib = None
        self._table = False


def _raw_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


def _capture_socket() -> socket.socket:
    """A packet socket on every interface that reads TCP segments with ACK set."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    try:
        code = b"".join(struct.pack("HBBI", *ins) for ins in _FILTER)
        buf = ctypes.create_string_buffer(code)
        prog = struct.pack("HL", len(_FILTER), ctypes.addressof(buf))
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:  # what arrived before the filter
                s.recv(256)
    except OSError:
        s.close()
        raise
    return s
