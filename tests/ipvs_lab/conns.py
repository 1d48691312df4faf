"""Long-lived connections through a VIP, for the IPVS lab tests (run in the client namespace).

    python conns.py VIP COUNT [--port 7] [--proto echo|http] [--interval 0.2] [--timeout 20]

Opens COUNT TCP connections to VIP:PORT and, on each, asks the real server's name every
``interval`` seconds, reading each answer: with ``echo`` the line ``?`` to the lab's line
echo (lvslab.echo), with ``http`` an HTTP/1.1 keep-alive GET (the lab's httpd). Prints
one JSON line ``{"ready": {local_port: server}}`` once every connection has been answered,
then obeys commands on stdin, one per line:

* ``status``: one JSON line, the connections as now (they keep going);
* ``stop`` (or end of input): stop, print the final JSON line, exit.

Each connection reports ``{"port", "server", "ok", "error", "gap", "last"}``: answers
received, the first error (``reset``, ``closed``, ``timeout``, ``moved`` when another real
server answered, ``refused``; None while it lives), the longest time between two answers,
and the monotonic time of the newest answer (``time.monotonic()`` of this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass


@dataclass
class Conn:
    port: int = 0
    server: str = ""
    ok: int = 0
    error: str | None = None
    gap: float = 0.0
    last: float = 0.0


async def answer(reader: asyncio.StreamReader) -> str:
    """Read one HTTP answer; its body (the real server's name)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-length":
            length = int(value)
    return (await reader.readexactly(length)).decode().strip()


async def echo_answer(reader: asyncio.StreamReader) -> str:
    """Read the echo's answer to ``?``: the real server's name on one line."""
    line = await reader.readline()
    if not line:
        raise asyncio.IncompleteReadError(line, None)
    return line.decode().strip()


async def run(conn: Conn, vip: str, port: int, proto: str, interval: float, timeout: float,
              ready: asyncio.Event, stop: asyncio.Event) -> None:
    if proto == "echo":
        request, read = b"?\n", echo_answer
    else:
        request, read = f"GET / HTTP/1.1\r\nHost: {vip}\r\n\r\n".encode(), answer
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(vip, port)
        conn.port = writer.get_extra_info("sockname")[1]
        while not stop.is_set():
            writer.write(request)
            async with asyncio.timeout(timeout):
                name = await read(reader)
            now = time.monotonic()
            if conn.server and name != conn.server:
                conn.error = "moved"
                return
            if conn.ok:
                conn.gap = max(conn.gap, now - conn.last)
            conn.server, conn.ok, conn.last = name, conn.ok + 1, now
            ready.set()
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
    except TimeoutError:
        conn.error = "timeout"
    except ConnectionRefusedError:
        conn.error = "refused"
    except ConnectionResetError:
        conn.error = "reset"
    except (asyncio.IncompleteReadError, BrokenPipeError, ConnectionError, OSError):
        conn.error = "closed"
    finally:
        ready.set()
        if writer is not None:
            writer.close()


def report(conns: list[Conn]) -> str:
    return json.dumps([asdict(c) for c in conns])


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("vip")
    ap.add_argument("count", type=int)
    ap.add_argument("--port", type=int, default=7)
    ap.add_argument("--proto", choices=("echo", "http"), default="echo")
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    stop = asyncio.Event()
    conns = [Conn() for _ in range(args.count)]
    readies = [asyncio.Event() for _ in conns]
    tasks = [asyncio.create_task(run(c, args.vip, args.port, args.proto, args.interval,
                                     args.timeout, r, stop))
             for c, r in zip(conns, readies, strict=True)]
    for r in readies:
        await r.wait()
    print(json.dumps({"ready": {c.port: c.server or c.error for c in conns}}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() == "status":
            print(report(conns), flush=True)
            continue
        break  # "stop" or end of input
    stop.set()
    await asyncio.gather(*tasks)
    print(report(conns), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
