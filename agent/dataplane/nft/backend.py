"""nftables data-plane backend: IPVS-like virtual services by DNAT, for kernels without IPVS.

Thin asyncio shell around the pure modules: ``plan`` decides the transaction, ``rules``
writes its JSON, ``read`` parses the kernel's listing. Every change is one atomic kernel
transaction (libnftables in-process, else ``nft -j -f -``); reads are ``list table``,
skipped while the kernel's ruleset generation has not moved. See docs/nftables-backend.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.dataplane.backend import SyncState
from agent.dataplane.netns_socket import ensure_sysctls, netns_path
from agent.dataplane.nft import elements
from agent.dataplane.nft import plan as nft_plan
from agent.dataplane.nft import traffic as nft_traffic
from agent.dataplane.nft.layout import NftInputError
from agent.dataplane.nft.libnft import WRITERS, LibNft
from agent.dataplane.nft.netlink import Elsewhere, Generation, elsewhere
from agent.dataplane.nft.nfbatch import BatchWriter, Message
from agent.dataplane.nft.read import MISSING, KernelState, parse_listing
from agent.dataplane.nft.rules import FAMILY, Config, delete_table
from agent.dataplane.nft.sched import fallbacks
from agent.dataplane.stats import Counters
from agent.dataplane.table import Op, Service, ServiceKey, Table
from agent.logcap import log_capped
from agent.subproc import communicate
from cluster.bulk import in_thread

__all__ = ["NftBackend", "NftError", "NftInputError", "available", "fallbacks"]

log = logging.getLogger(__name__)

LOOSE = "net.netfilter.nf_conntrack_tcp_loose"
BIG = 65536  # characters of nft JSON above which it is run or parsed off the event loop
INLINE_OPS = 16  # a change of at most this many ops is planned on the event loop (about
# 8 ms at 40,000 servers, mostly copies of the guard and traffic sets: Python that holds
# the GIL in a worker thread just the same)
INLINE_MESSAGES = 16  # and raw element messages up to this many sent from it: the threads'
# hops cost a one-server change 3-5 ms of its 20 (docs/benchmarks.md, "Reconcile, nftables")
SLOW_LISTING = 1.0  # seconds: a listing this slow is logged (at scale, the reason matters)
#: seconds a scrape may wait for the traffic counters (nft lists the sets, and starts again
#: whenever the ruleset moves: at 100,000 real servers it did not finish in 60 s)
TRAFFIC_TIMEOUT = 10.0


class NftError(RuntimeError):
    """nft or the kernel refused or failed a command; the message has nft's own words."""


@dataclass(frozen=True)
class _Prepared:
    """One transaction ready to commit: its plan, libnftables JSON and raw messages."""

    plan: nft_plan.Plan
    text: str | None
    messages: list[Message]
    fallbacks: dict[ServiceKey, tuple[str, ...]]  # of each service written (for the log)


def _drop(future: asyncio.Future[Any]) -> None:
    """Retrieve a result nobody waits for (no "exception never retrieved" log)."""
    if not future.cancelled():
        future.exception()


def _services(state: KernelState) -> Table:
    """The services of ``state``, as copies the caller may keep."""
    return {key: Service(s.spec, dict(s.dests)) for key, s in state.services.items()}


def available(nft: str = "nft") -> bool:
    """True if ``nft`` runs here with the rights to list the ruleset."""
    if shutil.which(nft) is None:
        return False
    try:
        proc = subprocess.run([nft, "list", "tables"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


class NftBackend:
    """Programs virtual services into one ``inet`` table of our own.

    ``compact_delay``: seconds after a change before a background transaction removes the
    superseded rules of changed services (None: only when :meth:`compact` is called).
    """

    name = "nftables"

    def __init__(
        self,
        table: str = "piranha",
        *,
        netns: str | None = None,
        full_nat: bool = False,
        ct_mark: int = 1 << 30,
        compact_delay: float | None = 1.0,
        nft: str = "nft",
        timeout: float = 60.0,
    ) -> None:
        if full_nat and not ct_mark:
            raise ValueError("full_nat needs a ct_mark bit to recognise our connections")
        if not 0 <= ct_mark < 1 << 32:
            raise ValueError("ct_mark must fit in 32 bits")
        self.cfg = Config(table=table, ct_mark=ct_mark, full_nat=full_nat)
        self._path = netns_path(netns)
        self._prefix = ["nsenter", f"--net={self._path}", "--"] if self._path else []
        self._nft = nft
        self._timeout = timeout
        self._compact_delay = compact_delay
        self._generation = Generation(netns)
        self._elsewhere = elsewhere(netns)  # our commits to other tables (the VIP fence's)
        self.listings = 0  # times the table was listed (read back whole)
        self._state: KernelState | None = None
        self._state_gen: int | None = None  # generation at which _state is known true
        self._lock = asyncio.Lock()
        self._compact_timer: asyncio.TimerHandle | None = None
        self._compact_task: asyncio.Task | None = None
        self._logged: dict[ServiceKey, tuple[str, ...]] = {}
        self._problems: tuple[str, ...] = ()
        # In our own namespace, with the stock binary: use libnftables in-process.
        self._lib = LibNft.load() if self._path is None and nft == "nft" else None
        self._batches: BatchWriter | None = None  # raw set-element batches (elements.py)
        if self._lib is not None:
            try:
                self._batches = BatchWriter(timeout)
            except OSError as exc:
                log.warning("no nf_tables netlink socket (%s): set elements go through "
                            "libnftables", exc)

    # ------------------------------------------------------------ public API

    def programmable(self, table: Table) -> Table:
        """``table`` as it is: this backend programs every setting (Maglev inputs too)."""
        return table

    async def read(self) -> Table:
        """The services the kernel holds in our table, as ``diff`` compares them."""
        async with self._lock:
            state = await self._fresh_state()
        self._schedule_compaction(state)
        return await in_thread(_services, state)

    async def apply(self, ops: Sequence[Op]) -> None:
        """Carry out ``ops`` in one atomic transaction (several, each of whole services,
        above :data:`~agent.dataplane.nft.plan.TRANSACTION_OPS` operations).

        :class:`NftInputError` for ops that can't be programmed (nothing written then),
        :class:`NftError` if nft or the kernel refuses the transaction.
        """
        if not ops:
            return
        async with self._lock:
            state = self._state if self._state is not None else await self._fresh_state()
            # A big change goes as several transactions of whole services (plan.split):
            # other nftables writers (the VIP fence) wait for each one in the kernel.
            # Checked whole first (an input error writes nothing), then each transaction
            # is planned and encoded while the one before commits (libnftables and the
            # kernel run without the GIL): pure, but seconds of Python for 40,000
            # servers, so off the event loop (the lease, heartbeats).
            parts = nft_plan.split(ops, first=nft_plan.FIRST_TRANSACTION_OPS)
            checked = len(parts) > 1
            if checked:
                await in_thread(nft_plan.check, state, ops)
            state = await self._commit_parts(state, parts, checked)
        await self._give_back()
        self._schedule_compaction(state)

    async def flush(self) -> None:
        """Delete every virtual service: our whole table goes, in one transaction.

        Like ``ipvsadm -C``; the next :meth:`apply` creates the table again.
        """
        async with self._lock:
            state = self._state if self._state is not None else MISSING
            plan = nft_plan.Plan(delete_table(self.cfg), MISSING, {})
            await self._commit(state, await in_thread(self._prepare, plan))
            self._logged.clear()
            self._problems = MISSING.problems

    def traffic(self, *, servers: bool = True) -> Counters:
        """Kernel counters of every counted service and (``servers``) real server
        (traffic.py). Blocking, for the metrics server's thread: a child process dumps the
        sets in use (setdump.py) and decodes them, so the agent's event loop never waits
        for it. Without the servers only the services' sets are read (``tv4``, ``tv6``: a
        few elements per service, not three per real server)."""
        state = self._state
        families = ({item[1] for item in state.traffic} if state is not None
                    and state.traffic is not None else {4, 6})
        names = [name for name, family in nft_traffic.SETS.items() if family in families
                 and (servers or name.startswith("tv"))]
        argv = [*self._prefix, sys.executable, "-m", "agent.dataplane.nft.traffic",
                self.cfg.table, *names]
        proc = subprocess.run(argv, capture_output=True, text=True,
                              timeout=min(self._timeout, TRAFFIC_TIMEOUT), check=False)
        if proc.returncode != 0:
            raise NftError(f"reading the traffic counters: {proc.stderr.strip()[-500:]}")
        return nft_traffic.counters(nft_traffic.parse_lines(proc.stdout))

    async def compact(self) -> None:
        """Remove superseded rules, and broken or orphaned services nobody re-added, now."""
        async with self._lock:
            state = self._state
            if state is None or not state.untidy:
                return
            plan = await in_thread(nft_plan.plan_compaction, state, self.cfg)
            await self._commit(state, await in_thread(self._prepare, plan))
        await self._give_back()

    async def set_timeouts(self, tcp: int | None, tcpfin: int | None, udp: int | None) -> None:
        """IPVS connection timeouts: nftables has none of its own (conntrack's apply)."""

    async def sync_daemon(self, state: SyncState | None, iface: str, syncid: int) -> None:
        """The IPVS sync daemon: nftables has none; connection state is conntrack's."""

    def midstream_sysctls(self, protocols: Collection[str]) -> dict[str, str]:
        """TCP: ``net.netfilter.nf_conntrack_tcp_loose`` = 1 (the kernel's default):
        conntrack then tracks a connection from a mid-stream packet, and our DNAT picks its
        real server, instead of marking the packet invalid. UDP needs nothing (and this
        backend programs no SCTP)."""
        return {LOOSE: "1"} if "tcp" in protocols else {}

    async def set_sysctls(self, wanted: Mapping[str, str]) -> dict[str, str]:
        """Set these sysctls of our namespace where they differ; returns the old values."""
        return await asyncio.to_thread(ensure_sysctls, self._path, wanted)

    async def sync_refresh(self, period: int) -> None:
        """The IPVS sync daemon's refresh period: nftables has none."""

    def fallbacks(self, key: ServiceKey, service: Service) -> list[str]:
        """What this backend does differently from IPVS for ``service`` (for status)."""
        return fallbacks(service.spec, service.dests, key)

    def uses_libnftables(self) -> bool:
        """True when transactions run in-process (libnftables) rather than through `nft`."""
        return self._lib is not None

    @property
    def problems(self) -> tuple[str, ...]:
        """Drift and junk the last listing of our table found (empty when clean).

        After a transaction that repairs something, the next :meth:`read` lists again.
        """
        return self._problems

    def close(self) -> None:
        """Stop the background compaction and release the netlink socket."""
        if self._compact_timer is not None:
            self._compact_timer.cancel()
            self._compact_timer = None
        if self._compact_task is not None:
            self._compact_task.cancel()
            self._compact_task = None
        self._generation.close()
        if self._lib is not None:
            self._lib.close()
            self._lib = None
        if self._batches is not None:
            self._batches.close()
            self._batches = None

    # ------------------------------------------------------------ kernel I/O

    async def _fresh_state(self) -> KernelState:
        """Our state, listed from the kernel unless its generation says nothing changed."""
        gen = self._generation.get()
        if self._state is not None and _unmoved(self._state_gen, gen, self._elsewhere):
            self._state_gen = gen
            return self._state
        started = time.monotonic()
        listing = await self._list()
        await self._give_back()
        state = await in_thread(parse_listing, listing, self.cfg)
        took = time.monotonic() - started
        self.listings += 1
        log.log(logging.INFO if took >= SLOW_LISTING else logging.DEBUG,
                "nftables table %s listed in %.1f s (%d services): %s", self.cfg.table, took,
                len(state.services), "no state known" if self._state is None
                else f"generation {self._state_gen} -> {gen}")
        self._state = state
        # The listing is true at every generation from `gen` on that only our commits to
        # other tables made (the VIP fence renews while 40,000 servers are listed).
        after = self._generation.get()
        self._state_gen = after if _unmoved(gen, after, self._elsewhere) else None
        if state.problems != self._problems:
            level = logging.INFO if state is MISSING else logging.WARNING
            log_capped(log, level, [f"nftables table {self.cfg.table}: {problem}"
                                    for problem in state.problems])
        self._problems = state.problems
        return state

    async def _commit_parts(self, state: KernelState, parts: list[Sequence[Op]],
                            checked: bool) -> KernelState:
        """Plan, encode and commit each part in turn, the next one prepared (in a worker
        thread) while this one commits; the state the last one leaves."""

        def prepare(state: KernelState, part: Sequence[Op]) -> _Prepared:
            return self._prepare(nft_plan.plan_apply(state, part, self.cfg, checked=checked))

        if len(parts) == 1 and len(parts[0]) <= INLINE_OPS:  # a change or two: no thread
            ready = prepare(state, parts[0])
            await self._commit(state, ready)
            self._log_fallbacks(ready)
            return ready.plan.after
        ahead = asyncio.ensure_future(in_thread(prepare, state, parts[0]))
        for at in range(len(parts)):
            ready = await ahead
            if at + 1 < len(parts):
                ahead = asyncio.ensure_future(in_thread(prepare, ready.plan.after, parts[at + 1]))
            try:
                await self._commit(state, ready)
            except BaseException:
                if at + 1 < len(parts):  # its thread runs on; nobody wants its result
                    ahead.cancel()
                    ahead.add_done_callback(_drop)
                raise
            self._log_fallbacks(ready)
            state = ready.plan.after
        return state

    def _prepare(self, plan: nft_plan.Plan) -> _Prepared:
        """A plan's libnftables JSON, raw messages and what its services lose against IPVS
        (in a worker thread: bulk work).

        Set elements (guard, traffic, new dispatch) go as raw batches of their own, right
        after the JSON (elements.py): libnftables would read every set of the namespace."""
        cmds, ours = (elements.split(self.cfg.table, plan.commands) if self._batches
                      else (plan.commands, []))
        return _Prepared(plan, json.dumps({"nftables": cmds}) if cmds else None,
                         elements.messages(self.cfg.table, ours) if ours else [],
                         {key: tuple(self.fallbacks(key, service))
                          for key, service in plan.written.items()})

    async def _commit(self, state: KernelState, ready: _Prepared) -> None:
        """Run one prepared transaction; on success remember the state it leaves."""
        plan = ready.plan
        if not plan.commands:
            return
        before = self._generation.get()
        commits = 0
        try:
            if ready.text is not None:
                await self._run(["-j", "-f", "-"], ready.text)
                commits += 1
            if ready.messages:
                sent, error = (self._send_elements(ready.messages)
                               if len(ready.messages) <= INLINE_MESSAGES
                               else await asyncio.to_thread(self._send_elements, ready.messages))
                commits += sent
                if error is not None:
                    raise NftError(f"set elements (raw netlink batch): {error}")
        except BaseException:
            self._state = None  # unknown now: the next call lists the kernel again
            raise
        after = self._generation.get()
        in_sync = (_unmoved(self._state_gen, before, self._elsewhere) and after is not None
                   and before is not None
                   and after == before + commits + self._elsewhere.count(before, after))
        self._state = plan.after
        self._state_gen = after if in_sync else None
        if state is MISSING:
            self._problems = ()  # everything there now was written by this transaction
        elif state.problems:
            self._state_gen = None  # a repair: the next read lists the kernel to check it

    async def _list(self) -> dict[str, Any] | None:
        """nft's JSON listing of our table, None if the table does not exist."""
        try:
            out = await self._run(["-j", "list", "table", FAMILY, self.cfg.table])
        except NftError as exc:
            if "Error: No such file or directory" in str(exc):  # nft's words, not nsenter's
                return None
            raise
        try:
            return await in_thread(json.loads, out) if len(out) > BIG else json.loads(out)
        except ValueError as exc:
            raise NftError(f"nft printed no valid JSON: {exc}") from None

    async def _run(self, args: list[str], stdin: str | None = None) -> str:
        if self._lib is not None:
            return await self._run_lib(args, stdin)
        argv = [*self._prefix, self._nft, *args]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise NftError(f"cannot run {argv[0]}: {exc}") from None
        data = stdin.encode() if stdin is not None else None
        try:
            out, err = await communicate(proc, self._timeout, data)
        except TimeoutError:
            what = " ".join(args[:3])
            raise NftError(f"nft {what}: no answer in {self._timeout} s") from None
        if proc.returncode != 0:
            message = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
            raise NftError(f"nft {' '.join(args[:3])}: {message}")
        return out.decode()

    async def _run_lib(self, args: list[str], stdin: str | None) -> str:
        """The same as running `nft ARGS`, in-process (big transactions off the loop)."""
        assert self._lib is not None and args[0] == "-j"
        command = stdin if args[1:] == ["-f", "-"] and stdin is not None else " ".join(args[1:])
        # A listing's size is the table's, not the command's.
        if len(command) > BIG or args[1] == "list":
            rc, out, err = await asyncio.to_thread(self._lib.run, command)
        else:
            rc, out, err = self._lib.run(command)
        if rc != 0:
            raise NftError(f"nft {' '.join(args[:3])}: {err.strip() or f'status {rc}'}")
        return out

    async def _give_back(self) -> None:
        """The C heap's free pages back, if a big libnftables context was freed since."""
        if self._lib is not None and self._lib.unreturned:
            await asyncio.to_thread(self._lib.give_back)

    def _send_elements(self, messages: list[Message]) -> tuple[int, str | None]:
        """Raw batches of set elements (elements.messages'), each in our writers' turn and
        at most :data:`~agent.dataplane.nft.elements.BATCH_MESSAGES` messages (the kernel
        holds its commit lock while it takes one in, and the VIP fence may be waiting):
        (batches committed, the error that stopped the rest, if any)."""
        assert self._batches is not None
        sent = 0
        for at in range(0, len(messages), elements.BATCH_MESSAGES):
            with WRITERS:
                error = self._batches.send(messages[at:at + elements.BATCH_MESSAGES])
            if error is not None:
                return sent, error
            sent += 1
        return sent, None

    # ------------------------------------------------------------ helpers

    def _log_fallbacks(self, ready: _Prepared) -> None:
        """Log what each written service loses against IPVS, once per distinct set: one
        line per kind of loss, naming the first few services that have it."""
        new: dict[str, list[str]] = {}
        plan = ready.plan
        for key, warnings in ready.fallbacks.items():
            if warnings and warnings != self._logged.get(key):
                for warning in warnings:
                    new.setdefault(warning, []).append(str(key))
            self._logged[key] = warnings
        for warning, keys in new.items():
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            log.warning("%s: %s", ", ".join(keys[:3]) + more, warning)
        for key in plan.deleted:  # (not a walk of every service: 2 ms of a change at 2,500)
            self._logged.pop(key, None)

    def _schedule_compaction(self, state: KernelState) -> None:
        if self._compact_delay is None or not state.untidy:
            return
        if self._compact_timer is not None or self._compact_task is not None:
            return
        loop = asyncio.get_running_loop()
        self._compact_timer = loop.call_later(self._compact_delay, self._start_compaction)

    def _start_compaction(self) -> None:
        self._compact_timer = None
        self._compact_task = asyncio.get_running_loop().create_task(self._background_compact())

    async def _background_compact(self) -> None:
        try:
            await self.compact()
        except (NftError, OSError) as exc:
            log.warning("nftables compaction failed (the next read lists again): %s", exc)
        except Exception:
            log.exception("nftables compaction failed")
        finally:
            self._compact_task = None


def _unmoved(known: int | None, now: int | None, ours: Elsewhere) -> bool:
    """Whether the data plane's table is as it was at generation ``known`` at ``now``: no
    commit came since, or only this process's commits to other tables (the VIP fence's)."""
    if known is None or now is None or now < known:
        return False
    return now == known or now - known == ours.count(known, now)
