"""The connection benchmark's client: C long-lived TCP connections to a line echo, one line
on each every 100 ms, every echo checked and timed.

Runs inside the lab's client namespace (``ip netns exec <prefix>-client python THIS ...``),
driven over stdin/stdout by bench/connections.py, one JSON object per output line:

    python bench/conn_client.py --host 10.91.0.100 --port 7 --connections 200 \\
        [--every 0.1] [--sources 10.91.0.150,10.91.0.151]

* At start it opens every connection (connection i from source address i mod S, spread
  over one period so the lines of all connections are spread evenly in time), asks each
  for its real server (the echo answers ``?`` with the server's name), then prints
  ``{"ready": true, "open": N, "failed": M}``.
* ``status`` on stdin: ``{"status": [[state, last_echo, pending_since], ...]}`` (one entry
  per connection, cheap enough to poll).
* ``stop``: stops sending, closes every connection, prints ``{"records": [...]}`` (every
  connection's record, see :class:`Conn`) and exits.

A line is ``<sequence number>\\n``; the echo must return exactly the next expected one.
A *stall* is the time a connection waited for an echo: from the moment a line was sent, or
the previous echo arrived if that was later, to the arrival of the echo. Stalls of at least
``KEEP_STALL`` are all kept (start, duration). The clock is ``time.monotonic()``, shared by
every namespace of the host, so the orchestrator compares it with its own fault times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import resource
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

KEEP_STALL = 0.15  # seconds: stalls at least this long are kept in the record
CONNECT_TIMEOUT = 5.0


@dataclass
class Conn:
    """One connection's record (what the orchestrator's analysis reads)."""

    id: int
    source: str
    server: str = ""  # the real server's name, from the echo's answer to "?"
    opened: float | None = None  # when the connection was established
    state: str = "unopened"  # unopened | open | reset | closed | timeout | error
    ended: float | None = None
    error: str = ""
    sent: int = 0
    echoed: int = 0
    mismatched: int = 0  # echoes that were not the line expected next
    last_echo: float | None = None
    pending_since: float | None = None  # stall start of the oldest unanswered line
    longest: float = 0.0  # longest finished stall
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (start, s) >= KEEP


def error_state(exc: BaseException) -> tuple[str, str]:
    """(state, error text) of a connection that failed with ``exc``."""
    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code, "") if code else ""
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError) \
            or code in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
        return "reset", name or type(exc).__name__
    if isinstance(exc, TimeoutError) or code == errno.ETIMEDOUT:
        return "timeout", name or "TimeoutError"
    return "error", name or f"{type(exc).__name__}: {exc}"


class Client:
    """The connections and their tasks."""

    def __init__(self, host: str, port: int, count: int, every: float,
                 sources: Sequence[str]) -> None:
        self.host, self.port, self.every = host, port, every
        self.conns = [Conn(i, sources[i % len(sources)] if sources else "")
                      for i in range(count)]
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.sending = True

    async def open_all(self) -> None:
        """Open every connection (spread over one period) and learn its server."""
        start = time.monotonic()
        n = len(self.conns)
        await asyncio.gather(*(self._open(c, start + i * self.every / max(n, 1))
                               for i, c in enumerate(self.conns)))

    async def _open(self, c: Conn, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                local = (c.source, 0) if c.source else None
                reader, writer = await asyncio.open_connection(self.host, self.port,
                                                               local_addr=local)
                writer.write(b"?\n")
                c.server = (await reader.readline()).decode(errors="replace").strip()
        except (OSError, TimeoutError) as exc:
            c.state, c.error = error_state(exc)
            c.error = f"connect: {c.error}"
            return
        c.opened, c.state = time.monotonic(), "open"
        self.writers[c.id] = writer
        sent: deque[tuple[int, float]] = deque()
        self.tasks.append(asyncio.create_task(self._send(c, writer, sent, at)))
        self.tasks.append(asyncio.create_task(self._receive(c, reader, sent)))

    async def _send(self, c: Conn, writer: asyncio.StreamWriter,
                    sent: deque[tuple[int, float]], phase: float) -> None:
        due = phase + self.every * (1 + int((time.monotonic() - phase) / self.every))
        while self.sending and c.state == "open":
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not (self.sending and c.state == "open"):
                return
            now = time.monotonic()
            sent.append((c.sent, now))
            if c.pending_since is None:
                c.pending_since = now
            writer.write(f"{c.sent}\n".encode())
            c.sent += 1
            due += self.every
            if due < now:  # we fell behind (a busy machine): skip, never burst
                due = now + self.every

    async def _receive(self, c: Conn, reader: asyncio.StreamReader,
                       sent: deque[tuple[int, float]]) -> None:
        try:
            while True:
                line = await reader.readline()
                now = time.monotonic()
                if not line:
                    self._end(c, "closed", "EOF", now)
                    return
                if not sent:
                    c.mismatched += 1
                    continue
                seq, at = sent.popleft()
                if line != f"{seq}\n".encode():
                    c.mismatched += 1
                begin = at if c.last_echo is None else max(at, c.last_echo)
                stall = now - begin
                c.longest = max(c.longest, stall)
                if stall >= KEEP_STALL:
                    c.stalls.append((round(begin, 6), round(stall, 6)))
                c.echoed += 1
                c.last_echo = now
                c.pending_since = max(sent[0][1], now) if sent else None
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            state, text = error_state(exc)
            self._end(c, state, text, time.monotonic())

    def _end(self, c: Conn, state: str, error: str, now: float) -> None:
        if c.state == "open":
            c.state, c.error, c.ended = state, error, now

    def status(self) -> list[tuple[str, float | None, float | None]]:
        return [(c.state, c.last_echo, c.pending_since) for c in self.conns]

    async def stop(self) -> None:
        """Stop sending, close every connection (FIN), cancel the tasks."""
        self.sending = False
        for writer in self.writers.values():
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _say(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> None:
    _raise_nofile()
    sources = [s for s in args.sources.split(",") if s] if args.sources else []
    client = Client(args.host, args.port, args.connections, args.every, sources)
    await client.open_all()
    _say({"ready": True, "open": sum(c.state == "open" for c in client.conns),
          "failed": sum(c.state != "open" for c in client.conns),
          "errors": sorted({c.error for c in client.conns if c.error})[:5]})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        command = (await reader.readline()).decode().strip()
        if command == "status":
            _say({"status": client.status()})
        elif command in ("stop", ""):  # "": stdin closed, the orchestrator is gone
            await client.stop()
            _say({"records": [asdict(c) for c in client.conns]})
            return
        else:
            _say({"error": f"unknown command {command!r}"})


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=7)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--every", type=float, default=0.1, help="seconds between lines")
    ap.add_argument("--sources", default="", help="comma list of local source addresses")
    asyncio.run(run(ap.parse_args(argv)))


if __name__ == "__main__":
    main()
