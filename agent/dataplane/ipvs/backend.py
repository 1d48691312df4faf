"""The IPVS data-plane backend: the kernel's virtual server table over generic netlink.

Netlink calls block, so every kernel call runs on one worker thread that owns one socket
(calls are serialised; a broken socket is replaced on the next call). ``apply`` sends all
its changes in a few batched writes and reports every failed change, not just the first.
"""

from __future__ import annotations

import asyncio
import errno
import os
import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from agent.dataplane.backend import SyncState
from agent.dataplane.ipvs import codec as c
from agent.dataplane.ipvs.netlink import FamilyNotFound, GenlSocket
from agent.dataplane.netns_socket import ensure_sysctls, in_netns
from agent.dataplane.stats import Counters, ServiceTraffic, Traffic
from agent.dataplane.table import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    DestKey,
    DestSpec,
    EditDest,
    EditService,
    Op,
    Service,
    ServiceKey,
    Table,
)

T = TypeVar("T")

#: Per protocol, the sysctl that lets IPVS schedule a connection from any of its packets,
#: not only the first (a SYN, an SCTP INIT); UDP needs none.
SLOPPY = {"tcp": "net.ipv4.vs.sloppy_tcp", "sctp": "net.ipv4.vs.sloppy_sctp"}
SYSCTL_DIR = Path("/proc/sys/net/ipv4/vs")
#: ``sync_threshold`` with a period of 0: a connection is synced at each state change and
#: then on its packets at most every ``sync_refresh_period`` (time, not packet counts).
SYNC_THRESHOLD = "3 0"
KERNEL_SYNC_THRESHOLD = "3 50"


class IpvsError(Exception):
    """A kernel call failed; the message says which and why."""


class IpvsUnavailable(IpvsError):
    """This kernel (or network namespace) has no IPVS."""


@dataclass(frozen=True)
class OpError:
    """One change the kernel (or validation) refused."""

    op: Op
    errno: int
    message: str

    def __str__(self) -> str:
        return self.message


class ApplyError(IpvsError):
    """Some changes failed; the others were applied. ``errors`` lists every failure."""

    def __init__(self, errors: list[OpError], total: int) -> None:
        self.errors = errors
        self.total = total
        super().__init__(
            f"{len(errors)} of {total} IPVS changes failed; first: {errors[0].message}"
        )


@dataclass(frozen=True)
class Timeouts:
    """Connection timeouts in seconds (ipvsadm --set tcp tcpfin udp)."""

    tcp: int
    tcpfin: int
    udp: int


@dataclass(frozen=True)
class SyncDaemon:
    """A running connection-synchronisation daemon."""

    state: SyncState
    iface: str
    syncid: int


def describe(op: Op) -> str:
    """Human words for a change, e.g. 'add real server 10.0.0.2:80 to tcp:10.0.0.1:80'."""
    match op:
        case AddService(key) | EditService(key) | DelService(key):
            verb = {AddService: "add", EditService: "edit", DelService: "delete"}[type(op)]
            return f"{verb} service {key}"
        case AddDest(service, key) | EditDest(service, key) | DelDest(service, key):
            verb = {AddDest: "add", EditDest: "edit", DelDest: "delete"}[type(op)]
            return f"{verb} real server {key.address}:{key.port} of {service}"
    return repr(op)


def _reason(op: Op, code: int) -> str:
    is_dest = isinstance(op, AddDest | EditDest | DelDest)
    hints = {
        errno.EEXIST: "already exists",
        errno.ESRCH: "no such service",
        errno.ENOENT: "no such real server" if is_dest else "scheduler module not found",
        errno.EPERM: "not permitted (needs CAP_NET_ADMIN)",
        errno.EINVAL: "refused as invalid by the kernel" + (
            " (real server: must be a unicast address routable here; IPv4/IPv6 mix needs tunnel)"
            if is_dest else ""
        ),
    }
    name = errno.errorcode.get(code, str(code))
    return f"{hints.get(code, os.strerror(code))} ({name})"


def available() -> bool:
    """Does this kernel have IPVS loaded? (No module loading is attempted.)"""
    if os.path.exists("/proc/net/ip_vs"):
        return True
    try:
        GenlSocket("IPVS").close()
    except (OSError, FamilyNotFound):
        return False
    return True


class IpvsBackend:
    """Read and change the IPVS table of this host (or of network namespace ``netns``)."""

    name = "ipvs"

    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns
        self._sock: GenlSocket | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipvs")

    # ---------------------------------------------------------------- worker-thread side

    def _socket(self) -> GenlSocket:
        if self._sock is not None and self._sock.broken:
            self._drop()
        if self._sock is None:
            try:
                self._sock = GenlSocket("IPVS", self._netns)
            except FamilyNotFound:
                raise IpvsUnavailable("IPVS is not available (no ip_vs module loaded)") from None
            except OSError as exc:
                raise IpvsError(f"cannot open the IPVS netlink socket: {exc}") from None
        return self._sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _kernel(self, what: str, fn: Callable[[GenlSocket], T]) -> T:
        sock = self._socket()
        try:
            return fn(sock)
        except OSError as exc:
            self._drop()  # it may hold a half-read answer
            raise IpvsError(f"{what}: {exc.strerror or exc}") from None
        except (ValueError, KeyError, struct.error) as exc:  # an answer we cannot decode
            self._drop()
            raise IpvsError(f"{what}: malformed netlink answer ({exc!r})") from None

    def _read(self) -> dict[ServiceKey, Service]:
        def dump(sock: GenlSocket) -> dict[ServiceKey, Service]:
            table: dict[ServiceKey, Service] = {}
            for reply in sock.dump(c.CMD_GET_SERVICE, b""):
                key, spec = c.decode_service(c.parse_attrs(reply[c.ATTR_SERVICE]))
                af = c.FAMILIES.get(key.family, 0)
                try:
                    dests = sock.dump(
                        c.CMD_GET_DEST, c.nest(c.ATTR_SERVICE, c.service_key_attrs(key))
                    )
                except OSError as exc:
                    if exc.errno == errno.ESRCH:  # deleted while we read
                        continue
                    raise
                found: dict[DestKey, DestSpec] = dict(
                    c.decode_dest(c.parse_attrs(d[c.ATTR_DEST]), af) for d in dests
                )
                table[key] = Service(spec, found)
            return table

        return self._kernel("read the IPVS table", dump)

    def _apply(self, ops: list[Op]) -> list[OpError]:
        """Validate and send every op; return the failures in op order."""
        failed: dict[int, OpError] = {}
        requests: list[tuple[int, bytes]] = []
        sent: list[int] = []
        for i, op in enumerate(ops):
            try:
                requests.append(c.op_request(op))
                sent.append(i)
            except ValueError as exc:
                failed[i] = OpError(op, errno.EINVAL, f"{describe(op)}: {exc}")
        if requests:
            sock = self._socket()
            codes = sock.batch(requests)
            for n, (i, code) in enumerate(zip(sent, codes, strict=True)):
                if code:
                    reason = _reason(ops[i], code)
                    if n == sock.lost_from:
                        reason += "; the netlink socket failed: outcome unknown from here on"
                    failed[i] = OpError(ops[i], code, f"{describe(ops[i])}: {reason}")
        return [failed[i] for i in sorted(failed)]

    def _traffic(self, servers: bool = True) -> dict[ServiceKey, ServiceTraffic]:
        """One service dump, then (``servers``) one real-server dump per service (IPVS has
        no dump of every real server at once); never one call per real server."""
        def dump(sock: GenlSocket) -> dict[ServiceKey, ServiceTraffic]:
            out: dict[ServiceKey, ServiceTraffic] = {}
            for reply in sock.dump(c.CMD_GET_SERVICE, b""):
                attrs = c.parse_attrs(reply[c.ATTR_SERVICE])
                key, _ = c.decode_service(attrs)
                af = c.FAMILIES.get(key.family, 0)
                total = c.decode_stats(attrs, c.SVC_STATS, c.SVC_STATS64)
                if not servers:
                    out[key] = ServiceTraffic(total)
                    continue
                try:
                    dests = sock.dump(
                        c.CMD_GET_DEST, c.nest(c.ATTR_SERVICE, c.service_key_attrs(key)))
                except OSError as exc:
                    if exc.errno == errno.ESRCH:  # deleted while we read
                        continue
                    raise
                found: dict[DestKey, Traffic] = {}
                for d in dests:
                    dattrs = c.parse_attrs(d[c.ATTR_DEST])
                    dest, _ = c.decode_dest(dattrs, af)
                    found[dest] = c.decode_stats(dattrs, c.DEST_STATS, c.DEST_STATS64,
                                                 c.DEST_ACTIVE_CONNS, c.DEST_INACT_CONNS)
                out[key] = ServiceTraffic(total, found)
            return out

        return self._kernel("read the IPVS counters", dump)

    def _daemons(self, sock: GenlSocket) -> list[SyncDaemon]:
        found = []
        for reply in sock.dump(c.CMD_GET_DAEMON, b""):
            state, iface, syncid = c.decode_daemon(c.parse_attrs(reply[c.ATTR_DAEMON]))
            found.append(SyncDaemon(state, iface, syncid))  # type: ignore[arg-type]
        return found

    def _set_daemon(self, want: SyncDaemon | None) -> None:
        def converge(sock: GenlSocket) -> None:
            running = self._daemons(sock)
            for daemon in running:
                if daemon != want:
                    sock.request(c.CMD_DEL_DAEMON, c.daemon_attrs(daemon.state))
            if want is not None and want not in running:
                attrs = c.daemon_attrs(want.state, want.iface, want.syncid)
                sock.request(c.CMD_NEW_DAEMON, attrs)

        self._kernel("set the IPVS sync daemon", converge)

    def _timeouts(self, sock: GenlSocket) -> Timeouts:
        reply = sock.request(c.CMD_GET_CONFIG, b"")[0]
        return Timeouts(
            c.get_u32(reply, c.ATTR_TIMEOUT_TCP),
            c.get_u32(reply, c.ATTR_TIMEOUT_TCP_FIN),
            c.get_u32(reply, c.ATTR_TIMEOUT_UDP),
        )

    # ---------------------------------------------------------------- event-loop side

    def programmable(self, table: Table) -> Table:
        """``table`` without the Maglev inputs: the kernel's mh computes its own table (its
        size is the kernel's CONFIG_IP_VS_MH_TAB_INDEX, its hash keys are fixed)."""
        return {key: replace(s, spec=replace(s.spec, maglev=None)) if s.spec.maglev else s
                for key, s in table.items()}

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def traffic(self, timeout: float = 10.0, *, servers: bool = True) -> Counters:
        """Kernel counters of every service and (``servers``) real server. Blocking, safe
        from any thread (the metrics server's): it runs on the backend's own netlink
        thread."""
        return self._pool.submit(self._traffic, servers).result(timeout)

    async def read(self) -> dict[ServiceKey, Service]:
        """Everything the kernel holds now, as a table (raises IpvsError)."""
        return await self._call(self._read)

    async def apply(self, ops: Sequence[Op]) -> None:
        """Make every change, in order; raise ApplyError listing each one that failed."""
        ops = list(ops)
        if not ops:
            return
        errors = await self._call(self._apply, ops)
        if errors:
            raise ApplyError(errors, len(ops))

    async def flush(self) -> None:
        """Delete every virtual service (ipvsadm -C)."""
        await self._call(self._kernel, "flush", lambda s: s.request(c.CMD_FLUSH, b""))

    async def set_timeouts(self, tcp: int | None, tcpfin: int | None, udp: int | None) -> None:
        """Set connection timeouts in seconds; None (or 0) leaves one unchanged."""
        for name, value in (("tcp", tcp), ("tcpfin", tcpfin), ("udp", udp)):
            if value is not None and not 0 <= value <= c.MAX_PERSISTENT:
                raise ValueError(f"IPVS {name} timeout must be 0..{c.MAX_PERSISTENT} s: {value}")
        attrs = c.timeouts_attrs(tcp, tcpfin, udp)
        if attrs:
            await self._call(
                self._kernel, "set IPVS timeouts", lambda s: s.request(c.CMD_SET_CONFIG, attrs)
            )

    async def timeouts(self) -> Timeouts:
        """The connection timeouts in force."""
        return await self._call(self._kernel, "read IPVS timeouts", self._timeouts)

    async def sync_daemon(self, state: SyncState | None, iface: str, syncid: int) -> None:
        """Run exactly this sync daemon (None: none). Another state's daemon is stopped."""
        want = None
        if state is not None:
            if state not in c.DAEMON_STATES:
                raise ValueError(f"sync daemon state must be master, backup or None: {state!r}")
            if not 0 < len(iface) < 16 or "/" in iface:
                raise ValueError(f"sync daemon interface name is not valid: {iface!r}")
            if not 0 <= syncid <= 255:
                raise ValueError(f"sync daemon syncid must be 0..255: {syncid}")
            want = SyncDaemon(state, iface, syncid)
        await self._call(self._set_daemon, want)

    def midstream_sysctls(self, protocols: Collection[str]) -> dict[str, str]:
        """``net.ipv4.vs.sloppy_tcp`` (TCP), ``sloppy_sctp`` (SCTP) = 1: IPVS then creates a
        connection for a packet of a flow it does not know, not only for a SYN or an INIT
        (docs/dataplane.md, "Schedulers that survive a failover")."""
        return {SLOPPY[p]: "1" for p in sorted(protocols) if p in SLOPPY}

    async def set_sysctls(self, wanted: Mapping[str, str]) -> dict[str, str]:
        """Set these sysctls of our namespace where they differ; returns the old values."""
        return await asyncio.to_thread(ensure_sysctls, self._netns, wanted)
    async def sync_refresh(self, period: int) -> None:
        """Sync a connection at its state changes and then, while it carries packets, at most
        every ``period`` seconds (``net.ipv4.vs.sync_refresh_period``; ``sync_threshold``
        ``3 0`` turns off the packet-count rule). 0 restores the kernel's defaults."""
        if not 0 <= period <= c.MAX_PERSISTENT:
            raise ValueError(f"IPVS sync refresh period must be 0..{c.MAX_PERSISTENT} s: {period}")
        threshold = SYNC_THRESHOLD if period else KERNEL_SYNC_THRESHOLD
        await self._call(self._sysctls, {"sync_refresh_period": str(period),
                                         "sync_threshold": threshold})

    async def sysctl(self, name: str) -> str:
        """The value of ``net.ipv4.vs.NAME`` in this backend's namespace."""
        return await self._call(
            in_netns, self._netns, lambda: (SYSCTL_DIR / name).read_text().strip())

    def _sysctls(self, values: dict[str, str]) -> None:
        def write() -> None:
            for name, value in values.items():
                (SYSCTL_DIR / name).write_text(value + "\n")

        try:
            in_netns(self._netns, write)
        except OSError as exc:
            raise IpvsError(f"set net.ipv4.vs sysctls {values}: {exc.strerror or exc}") from None

    async def sync_daemons(self) -> list[SyncDaemon]:
        """The sync daemons running now."""
        return await self._call(self._kernel, "read IPVS sync daemons", self._daemons)

    def close(self) -> None:
        """Close the socket and stop the worker (waits for a call in progress)."""
        self._pool.submit(self._drop)
        self._pool.shutdown(wait=True)
