"""The conntrackd child process: started, watched, restarted with backoff, asked commands.

Nothing here may stop the agent: a missing binary, a config conntrackd refuses, a crash,
a hung command are logged, counted (:class:`DaemonStats`, exported as metrics) and retried
with backoff, while the agent goes on serving without state sync.

conntrackd runs in the foreground (its "console mode"); its log lines arrive on our pipe
and are relayed to our log as ``conntrackd: ...``. It gets SIGTERM if the agent dies
(``PR_SET_PDEATHSIG``, set by util-linux's ``setpriv --pdeathsig`` which then execs
conntrackd: a Python ``preexec_fn`` in the child of our threaded process (gRPC's threads)
crashed it with SIGSEGV before exec, now and then), and normal CPU scheduling: conntrackd
makes itself SCHED_RR 99 by default, which on a loaded router can starve the agent's own
heartbeats and lease refresh, and the agent decides the failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..subproc import communicate

log = logging.getLogger(__name__)

READY_WITHIN = 10.0  # seconds for conntrackd to say "initialization completed"
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
STABLE_AFTER = 60.0  # a daemon that ran this long restarts with the first delay again
COMMAND_TIMEOUT = 10.0
LINK_POLL = 2.0  # seconds between `conntrackd -s link` polls

_COMMITTED = re.compile(r"Committed (\d+) new entries")
_COMMIT_TOOK = re.compile(r"commit has taken ([0-9.]+) seconds")
_LINK = re.compile(r"device=(\S+) status=(\S+)")
_LINK_ERRORS = re.compile(r"(\d+) Error send\s+(\d+) Error recv")
_LEVEL = re.compile(r"\[(ERROR|WARNING|notice|warning|error)\]\s*(.*)$")


@dataclass
class DaemonStats:
    """What the metrics show of conntrackd."""

    up: bool = False  # running and initialised
    starts: int = 0
    restarts: int = 0  # starts after the first (a death, a refusal, a new config)
    failures: int = 0  # starts that failed or daemons that died
    last_error: str = ""
    last_error_at: float = 0.0  # epoch
    link_up: bool | None = None  # as conntrackd's channel reports it (None: not known)
    link_down: int = 0  # transitions of the sync link to down
    send_errors: int = 0
    recv_errors: int = 0
    commit_entries: int = 0  # entries the newest commit put in the kernel (conntrackd's count)
    commit_daemon_seconds: float = 0.0  # its duration as conntrackd measured it
    log_errors: int = 0  # [ERROR] lines conntrackd logged


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    output: str
    seconds: float


@dataclass
class _Run:
    proc: asyncio.subprocess.Process
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    tail: list[str] = field(default_factory=list)  # its last lines, for the error message


def _pdeathsig() -> list[str]:
    """The prefix that makes the daemon get SIGTERM when we die (none without setpriv).

    Not a ``preexec_fn``: Python code between fork and exec in a process with other threads
    (gRPC's) may crash or hang the child.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


class Conntrackd:
    """One supervised conntrackd. ``configure()`` it, ``run()`` it as a task."""

    def __init__(self, binary: str = "conntrackd", *, backoff_first: float = BACKOFF_FIRST,
                 backoff_max: float = BACKOFF_MAX, link_poll: float = LINK_POLL,
                 netns: str | None = None,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.binary = binary
        self.netns = netns  # run it in this named network namespace (tests)
        self.backoff_first, self.backoff_max = backoff_first, backoff_max
        self.link_poll = link_poll
        self.on_line = on_line
        self.stats = DaemonStats()
        self.config_path: Path | None = None
        self.text: str | None = None  # the config conntrackd should run; None: none
        self._run: _Run | None = None
        self._changed = asyncio.Event()
        self.changed = asyncio.Event()  # set when it comes up or goes down

    # -- what it should run -----------------------------------------------------------

    def configure(self, text: str | None, path: Path | None) -> None:
        """Run conntrackd with config ``text`` written at ``path`` (None: stop it). A new
        text restarts it."""
        if (text, path) == (self.text, self.config_path):
            return
        self.text, self.config_path = text, path
        self._changed.set()

    @property
    def up(self) -> bool:
        return self.stats.up

    # -- the supervisor ---------------------------------------------------------------

    async def run(self) -> None:
        """Keep conntrackd running on the newest config; never raises but cancellation."""
        delay = self.backoff_first
        while True:
            self._changed.clear()
            if self.text is None or self.config_path is None:
                await self._changed.wait()
                continue
            started = time.monotonic()
            try:
                reason = await self._one_run(self.text, self.config_path)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let a supervisor bug stop the agent
                reason = f"supervisor error: {type(exc).__name__}: {exc}"
                log.exception("conntrackd supervisor")
            self._set_down()
            if reason is None:  # stopped for a new config: at once
                delay = self.backoff_first
                continue
            self._error(reason)
            self.stats.failures += 1
            if time.monotonic() - started >= STABLE_AFTER:
                delay = self.backoff_first
            log.error("conntrackd: %s; connection state is not synced; retrying in %.0f s "
                      "(the router keeps serving)", reason, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), delay)
            delay = min(delay * 2, self.backoff_max)

    async def _one_run(self, text: str, path: Path) -> str | None:
        """Start conntrackd and watch it; the reason it ended (None: a new config)."""
        binary = shutil.which(self.binary)
        if binary is None:
            return (f"{self.binary} not found (install the Debian package conntrackd)")
        try:
            await self._prepare(binary, text, path)
        except OSError as exc:
            return f"cannot write {path}: {exc}"
        self.stats.starts += 1
        if self.stats.starts > 1:
            self.stats.restarts += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *_pdeathsig(), *self._argv(binary), "-C", str(path),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            return f"cannot start {binary}: {exc}"
        run = self._run = _Run(proc)
        reader = asyncio.create_task(self._relay(run), name="conntrackd-log")
        poller: asyncio.Task[None] | None = None
        waiter = asyncio.create_task(proc.wait())
        try:
            ready = asyncio.create_task(run.ready.wait())
            await asyncio.wait({waiter, ready}, timeout=READY_WITHIN,
                               return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not run.ready.is_set():
                if waiter.done():
                    await _drain(reader)
                    return self._exit_reason(run, "refused to start")
                return f"not initialised within {READY_WITHIN:.0f} s"
            _normal_scheduling(proc.pid)
            self.stats.up = True
            self.changed.set()
            log.info("conntrackd running (pid %d, config %s)", proc.pid, path)
            poller = asyncio.create_task(self._poll_link(), name="conntrackd-link")
            changed = asyncio.create_task(self._changed.wait())
            await asyncio.wait({waiter, changed}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if waiter.done():
                await _drain(reader)
                return self._exit_reason(run, "died")
            log.info("conntrackd: new configuration, restarting")
            return None
        finally:
            if poller is not None:
                poller.cancel()
            self._set_down()
            await self._stop(run)
            for task in (reader, waiter):
                task.cancel()
            await asyncio.gather(reader, waiter, poller or asyncio.sleep(0),
                                 return_exceptions=True)
            self._run = None

    async def _prepare(self, binary: str, text: str, path: Path) -> None:
        """Write the config; clear what a killed conntrackd of ours left (its lock file, or
        the daemon itself if it still answers on our control socket)."""
        lock = _write_config(text, path)
        if lock is not None and lock.exists():
            answer = await self._client(binary, path, "-s", within=2.0)
            if answer.ok:
                log.warning("conntrackd: a daemon left by an earlier run answers on our "
                            "control socket: stopping it")
                await self._client(binary, path, "-k", within=5.0)
                await asyncio.sleep(0.5)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
                log.warning("conntrackd: removed the stale lock file %s", lock)

    async def _relay(self, run: _Run) -> None:
        """conntrackd's output into our log; notes readiness, errors and commit results."""
        assert run.proc.stdout is not None
        async for raw in run.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            run.tail = [*run.tail[-4:], line]
            m = _LEVEL.search(line)
            level, msg = (m.group(1).lower(), m.group(2)) if m else ("notice", line)
            if level == "error":
                self.stats.log_errors += 1
                self._error(msg)
                log.error("conntrackd: %s", msg)
            elif level == "warning":
                log.warning("conntrackd: %s", msg)
            else:
                log.info("conntrackd: %s", msg)
            if "initialization completed" in line:
                run.ready.set()
            if c := _COMMITTED.search(line):
                self.stats.commit_entries = int(c.group(1))
            if t := _COMMIT_TOOK.search(line):
                self.stats.commit_daemon_seconds = float(t.group(1))
            if self.on_line is not None:
                self.on_line(line)

    def _exit_reason(self, run: _Run, what: str) -> str:
        rc = run.proc.returncode
        how = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit status {rc}"
        errors = [ln for ln in run.tail if "ERROR" in ln or "error" in ln]
        said = _LEVEL.search(errors[-1]).group(2) if errors and _LEVEL.search(errors[-1]) \
            else (run.tail[-1] if run.tail else "")
        return f"{what} ({how})" + (f": {said}" if said else "")

    async def _stop(self, run: _Run) -> None:
        proc = run.proc
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def _set_down(self) -> None:
        if self.stats.up:
            self.changed.set()
        self.stats.up = False
        self.stats.link_up = None

    def _error(self, message: str) -> None:
        self.stats.last_error = message
        self.stats.last_error_at = time.time()

    async def _poll_link(self) -> None:
        """The sync link as conntrackd sees it: a change to down is counted (never more)."""
        while True:
            result = await self.command("-s", "link", within=5.0, quiet=True)
            if result.ok:
                self._note_link(result.output)
            await asyncio.sleep(self.link_poll)

    def _note_link(self, output: str) -> None:
        m = _LINK.search(output)
        if m is None:
            return
        up = m.group(2) == "RUNNING"
        if self.stats.link_up and not up:
            self.stats.link_down += 1
            log.warning("conntrackd: sync link %s is %s (counted; not a reason to fail "
                        "over)", m.group(1), m.group(2))
        elif self.stats.link_up is False and up:
            log.info("conntrackd: sync link %s is up again", m.group(1))
        self.stats.link_up = up
        if e := _LINK_ERRORS.search(output):
            self.stats.send_errors, self.stats.recv_errors = int(e.group(1)), int(e.group(2))

    # -- commands ---------------------------------------------------------------------

    async def command(self, *args: str, within: float = COMMAND_TIMEOUT,
                      quiet: bool = False) -> CommandResult:
        """``conntrackd -C CONFIG ARGS`` against the running daemon; never raises (but
        cancellation). A daemon that is not up fails at once."""
        binary = shutil.which(self.binary)
        if not self.up or binary is None or self.config_path is None:
            return CommandResult(False, "conntrackd is not running", 0.0)
        result = await self._client(binary, self.config_path, *args, within=within)
        if not result.ok and not quiet:
            log.warning("conntrackd %s failed after %.3f s: %s", " ".join(args),
                        result.seconds, result.output or "no output")
        return result

    async def _client(self, binary: str, path: Path, *args: str,
                      within: float) -> CommandResult:
        start = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(binary), "-C", str(path), *args, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            return CommandResult(False, str(exc), time.monotonic() - start)
        try:
            out, _ = await communicate(proc, within)
        except TimeoutError:
            return CommandResult(False, f"no answer within {within:g} s",
                                 time.monotonic() - start)
        text = out.decode(errors="replace").strip()
        return CommandResult(proc.returncode == 0, text, time.monotonic() - start)

    def _argv(self, binary: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, binary] if self.netns else [binary]

    @property
    def pid(self) -> int | None:
        """The running conntrackd's pid (None: none runs)."""
        run = self._run
        return run.proc.pid if run is not None and run.proc.returncode is None else None

    async def close(self) -> None:
        """Stop conntrackd (it removes its lock file and socket)."""
        self.configure(None, None)
        if self._run is not None:
            await self._stop(self._run)


async def _drain(reader: asyncio.Task[None]) -> None:
    """Let the relay read a dead daemon's last lines (bounded: a child could hold the pipe)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(reader), 2.0)


def _write_config(text: str, path: Path) -> Path | None:
    """Write ``text`` at ``path`` (atomically); the lock file it names, if any."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    m = re.search(r"(?m)^\s*LockFile\s+(\S+)", text)
    return Path(m.group(1)) if m else None


def _normal_scheduling(pid: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
