"""Network labs for tests: named namespaces, a bridge, veth links, and code run inside them.

Typical use (root needed)::

    with netlab.Lab("vip") as lab:            # removes leftovers of dead runs of "vip"
        lab.add_bridge()                     # namespace "<prefix>br" with bridge br0
        lab.add_ns("client")
        lab.connect("client", "eth0", addrs=["10.0.0.1/24"])
        lab.run("client", "ping", "-c1", "10.0.0.2")
        async with await lab.worker("client") as w:   # a Python process in the namespace
            mgr = await w.keep("agent.vip:VipManager", lifetime=2)
            await w.call_method(mgr, "acquire", [("10.0.0.9", 24, "eth0")])
            await w.call("os:getpid")

Namespace names are ``<base><pid>-<n>-<name>``: unique per run and per lab, and the pid
lets a later run remove what a killed run left behind (namespaces outlive processes).
Processes started through a lab are killed by pid when it is destroyed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import itertools
import os
import pickle
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvslab.netns import (
    BRIDGE_DEV,
    LabError,
    add_bridge,
    add_ns,
    delete_ns,
    ip_json,
    namespaces,
    ns_exec,
    ns_pids,
    plug,
    run_in,
    sh,
)
from lvslab.netns import add_addr as _add_addr
from lvslab.netns import sysctl as _sysctl

__all__ = [
    "BRIDGE_DEV",
    "Lab",
    "LabError",
    "Worker",
    "WorkerError",
    "delete_ns",
    "namespaces",
    "ns_pids",
    "remove_leftovers",
    "sh",
    "wait_for",
]

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
_lab_ids = itertools.count()


class WorkerError(RuntimeError):
    """A call inside a worker raised; ``type_name`` and the remote traceback are kept."""

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}\n--- in the namespace ---\n{remote_traceback}")
        self.type_name = type_name
        self.message = message


# ---------------------------------------------------------------- commands
# sh, namespaces, ns_pids, delete_ns and LabError come from lvslab.netns.


def remove_leftovers(base: str) -> list[str]:
    """Delete namespaces ``<base><pid>-...`` whose creating process ``pid`` is gone."""
    pattern = re.compile(rf"^{re.escape(base)}(\d+)-")
    removed = []
    for ns in namespaces():
        match = pattern.match(ns)
        if match and not _alive(int(match.group(1))):
            delete_ns(ns)
            removed.append(ns)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def wait_for(
    probe: Callable[[], Any], within: float = 10.0, every: float = 0.05, what: str = ""
) -> Any:
    """Poll ``probe`` (sync or async) until it returns something truthy; return that.

    ``TimeoutError`` naming ``what`` and the last value if it never does.
    """
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {within} s waiting for {what or probe}: {value!r}")
        await asyncio.sleep(every)


# ---------------------------------------------------------------- the lab


class Lab:
    """Namespaces joined by veth pairs to bridges, with their processes; destroy() removes all."""

    def __init__(self, base: str = "nl") -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", base):
            raise ValueError("base must be 1-8 lowercase letters/digits, starting with a letter")
        remove_leftovers(base)
        self.prefix = f"{base}{os.getpid()}-{next(_lab_ids)}-"
        self.created: list[str] = []
        self._bridges: dict[str, str] = {}
        self._veths = itertools.count()
        self._procs: list[asyncio.subprocess.Process] = []
        self._workers: list[Worker] = []

    # names and topology

    def ns(self, name: str) -> str:
        """Full namespace name of lab namespace ``name``."""
        return self.prefix + name

    def add_ns(self, name: str) -> str:
        """Create namespace ``name`` with ``lo`` up; returns its full name."""
        full = add_ns(self.ns(name))
        self.created.append(full)
        return full

    def add_bridge(self, name: str = "br") -> str:
        """Create namespace ``name`` holding an STP-less bridge ``br0``; returns its full name."""
        full = self.add_ns(name)
        add_bridge(full)
        self._bridges[name] = full
        return full

    def connect(
        self,
        name: str,
        ifname: str = "eth0",
        *,
        bridge: str = "br",
        mac: str | None = None,
        addrs: Iterable[str] = (),
    ) -> None:
        """Plug namespace ``name`` into ``bridge`` with a veth ``ifname`` (up, with ``addrs``).

        IPv6 addresses are added with ``nodad`` so they work at once.
        """
        plug(self._bridges[bridge], f"v{next(self._veths)}", self.ns(name), ifname, mac=mac,
             addrs=addrs)

    def add_addr(self, name: str, ifname: str, cidr: str, *extra: str) -> None:
        """``ip addr add cidr dev ifname [extra]`` in ``name`` (IPv6: with nodad)."""
        _add_addr(self.ns(name), ifname, cidr, *extra)

    def sysctl(self, name: str, key: str, value: str | int) -> None:
        """Set ``key`` (e.g. ``net.ipv4.conf.all.arp_accept``) inside namespace ``name``."""
        _sysctl(self.ns(name), key, value)

    # commands and queries

    def run(self, name: str, *cmd: str, check: bool = True, limit: float = 30):
        """Run ``cmd`` inside namespace ``name`` and wait at most ``limit`` s."""
        return run_in(self.ns(name), *cmd, check=check, timeout=limit)

    async def arun(self, name: str, *cmd: str, check: bool = True, limit: float = 30):
        """:meth:`run` without blocking the event loop."""
        return await asyncio.to_thread(self.run, name, *cmd, check=check, limit=limit)

    def ip_json(self, name: str, *args: str) -> list[dict]:
        """``ip -j <args>`` inside namespace ``name``, parsed."""
        return ip_json(self.ns(name), *args)

    def mac(self, name: str, ifname: str = "eth0") -> str:
        """MAC address of ``ifname`` in ``name``."""
        return self.ip_json(name, "link", "show", "dev", ifname)[0]["address"]

    def addresses(self, name: str, ifname: str = "eth0") -> list[dict]:
        """``ip -j addr`` entries (``local``, ``prefixlen``, ``valid_life_time``, ...) of ifname."""
        links = self.ip_json(name, "addr", "show", "dev", ifname)
        return links[0].get("addr_info", []) if links else []

    def has_addr(self, name: str, ip: str, ifname: str = "eth0") -> bool:
        return any(a.get("local") == ip for a in self.addresses(name, ifname))

    def neigh(self, name: str, ip: str, ifname: str = "eth0") -> tuple[str | None, list[str]]:
        """(MAC or None, states) of the neighbour entry for ``ip`` in ``name``."""
        entries = self.ip_json(name, "neigh", "show", "to", ip, "dev", ifname)
        if not entries:
            return None, []
        return entries[0].get("lladdr"), entries[0].get("state", [])

    # processes

    async def spawn(self, name: str, *cmd: str, **kwargs: Any) -> asyncio.subprocess.Process:
        """Start ``cmd`` inside ``name`` (killed when the lab is destroyed)."""
        proc = await asyncio.create_subprocess_exec(
            *ns_exec(self.ns(name), *cmd), env=_env(), **kwargs
        )
        self._procs.append(proc)
        return proc

    async def serve(self, name: str, *cmd: str, ready: bytes = b"ready\n",
                    limit: float = 10) -> asyncio.subprocess.Process:
        """:meth:`spawn` a server that prints ``ready`` on stdout once it listens; return
        when it did (killed when the lab is destroyed)."""
        proc = await self.spawn(name, *cmd, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), limit)
        if line != ready:
            raise LabError(f"{name}: {' '.join(cmd[:3])}... said {line!r}, not {ready!r}")
        return proc

    async def worker(self, name: str) -> Worker:
        """A Python process inside ``name`` that runs calls on its own event loop."""
        worker = await Worker.start(ns_exec(self.ns(name)))
        self._workers.append(worker)
        self._procs.append(worker.proc)
        return worker

    async def call(self, name: str, target: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``target(*args, **kwargs)`` once in a fresh process inside ``name``."""
        async with await self.worker(name) as worker:
            return await worker.call(target, *args, **kwargs)

    # teardown

    def destroy(self) -> None:
        """Kill our processes and delete our namespaces (with their links)."""
        for proc in self._procs:
            if proc.returncode is None:
                _kill_child(proc.pid)
        self._procs.clear()
        for ns in reversed(self.created):
            delete_ns(ns)
        self.created.clear()

    async def aclose(self) -> None:
        """Close workers gracefully, then :meth:`destroy`."""
        for worker in self._workers:
            await worker.close()
        self._workers.clear()
        for proc in self._procs:
            if isinstance(proc, asyncio.subprocess.Process) and proc.returncode is None:
                proc.kill()
                await proc.wait()
        self.destroy()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    async def __aenter__(self) -> Lab:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _kill_child(pid: int) -> None:
    """SIGKILL ``pid`` only while it is still our un-reaped child (so never a reused pid)."""
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return  # reaped already: the number may belong to another process by now
    if done == 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(TESTS), str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


# ---------------------------------------------------------------- workers


@dataclass(frozen=True)
class Ref:
    """An object kept inside a worker (see :meth:`Worker.keep`)."""

    id: int


class Worker:
    """Client side of a Python process running calls on its own asyncio loop.

    Targets are ``"module:attr.path"`` strings; arguments and results are pickled. A call
    returning an awaitable is awaited inside the worker; calls run concurrently there, and
    tasks they start keep running between calls.
    """

    def __init__(self, proc: asyncio.subprocess.Process, replies: asyncio.StreamReader) -> None:
        self.proc = proc
        self._replies = replies
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, prefix: Sequence[str] = ()) -> Worker:
        """Start ``[*prefix, python, -c, serve]`` (e.g. prefix = ``ip netns exec NS``)."""
        rfd, wfd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *prefix, sys.executable, "-c", f"from support import netlab; netlab.serve({wfd})",
                stdin=asyncio.subprocess.PIPE, pass_fds=(wfd,), env=_env(),
            )  # fmt: skip
        finally:
            os.close(wfd)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 26)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(rfd, "rb", buffering=0)
        )
        worker = cls(proc, reader)
        await worker.call("os:getpid")  # started and importing fine
        return worker

    async def call(self, target: str, *args: Any, **kwargs: Any) -> Any:
        """Return ``target(*args, **kwargs)`` computed in the worker."""
        return await self._request("call", (target, args, kwargs, False))

    async def keep(self, target: str, *args: Any, **kwargs: Any) -> Ref:
        """Like :meth:`call` but keep the result in the worker and return a :class:`Ref`."""
        return await self._request("call", (target, args, kwargs, True))

    async def call_method(self, ref: Ref, method: str, *args: Any, **kwargs: Any) -> Any:
        """Return ``<kept object>.method(*args, **kwargs)``; ``Ref`` arguments are resolved."""
        return await self._request("method", (ref, method, args, kwargs))

    async def close(self, grace: float = 5.0) -> None:
        """Ask the worker to end (closing stdin), kill it if it does not."""
        if self.proc.returncode is None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(self, op: str, payload: Any) -> Any:
        if self.proc.returncode is not None or self._reader.done():
            raise LabError(f"worker {self.proc.pid} has exited ({self.proc.returncode})")
        req_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        self.proc.stdin.write(_encode((req_id, op, payload)))
        await self.proc.stdin.drain()
        return await future

    async def _read(self) -> None:
        try:
            while line := await self._replies.readline():
                req_id, ok, value = _decode(line)
                future = self._pending.pop(req_id, None)
                if future is None or future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(WorkerError(*value))
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(LabError(f"worker {self.proc.pid} ended"))
            self._pending.clear()


def _encode(obj: Any) -> bytes:
    return base64.b64encode(pickle.dumps(obj)) + b"\n"


def _decode(line: bytes) -> Any:
    return pickle.loads(base64.b64decode(line))


def _resolve(target: str) -> Any:
    module, _, path = target.partition(":")
    obj = __import__(module, fromlist=["_"])
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part)
    return obj


def serve(reply_fd: int) -> None:
    """Worker main loop: requests on stdin, replies on ``reply_fd``, until stdin closes."""
    asyncio.run(_serve(reply_fd))


async def _serve(reply_fd: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = os.fdopen(reply_fd, "wb", buffering=0)
    kept: dict[int, Any] = {}
    tasks: set[asyncio.Task] = set()

    def reply(req_id: int, ok: bool, value: Any) -> None:
        try:
            data = _encode((req_id, ok, value))
        except Exception as exc:  # an unpicklable result: say so instead
            data = _encode((req_id, False, (type(exc).__name__, f"{exc} in {value!r}", "")))
        out.write(data)

    async def handle(req_id: int, op: str, payload: Any) -> None:
        try:
            if op == "call":
                target, args, kwargs, keep = payload
                func = _resolve(target)
            else:
                ref, method, args, kwargs = payload
                func, keep = getattr(kept[ref.id], method), False
            args = [kept[a.id] if isinstance(a, Ref) else a for a in args]
            result = func(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            if keep:
                kept[req_id] = result
                result = Ref(req_id)
            reply(req_id, True, result)
        except BaseException as exc:
            reply(req_id, False, (type(exc).__name__, str(exc), traceback.format_exc()))
            if not isinstance(exc, Exception):
                raise

    while line := await reader.readline():
        req_id, op, payload = _decode(line)
        task = loop.create_task(handle(req_id, op, payload))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for task in list(tasks):
        task.cancel()
