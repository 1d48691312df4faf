"""A line echo for the lab's real servers (TCP port 7): every line comes back as sent.

Served by the same process as ``lvslab.httpd`` (``--echo-port 7``), so killing a real
server ends both. One extra: the line ``?`` is answered with the server's name (``rs1``),
so a client can learn which real server its connection landed on. Long-lived connections
are the point (bench/connections.py holds hundreds open through the VIP across a failover);
a connection idle for ``IDLE`` seconds is closed.

    printf 'ping\\n?\\n' | nc VIP 7        ->  ping / rs1
"""

from __future__ import annotations

import asyncio
import contextlib

ECHO_PORT = 7
MAX_LINE = 65536
IDLE = 600.0
WHO = b"?"


def echo_reply(line: bytes, name: str) -> bytes:
    """What the echo answers to one received ``line`` (with its newline, if it had one)."""
    if line.rstrip(b"\r\n") == WHO:
        return f"{name}\n".encode()
    return line


class EchoServer:
    """Counts connections and lines; one ``handle`` task per connection."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0
        self.lines = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE)
                except (TimeoutError, ValueError):  # idle, or a line over MAX_LINE
                    return
                if not line:
                    return
                self.lines += 1
                writer.write(echo_reply(line, self.name))
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def start_echo(name: str, bind: str, port: int = ECHO_PORT
                     ) -> tuple[asyncio.Server, EchoServer]:
    """Listen on ``bind:port``; the server (to close) and its counters."""
    echo = EchoServer(name)
    server = await asyncio.start_server(echo.handle, bind, port, backlog=4096,
                                        limit=MAX_LINE, reuse_address=True)
    return server, echo
