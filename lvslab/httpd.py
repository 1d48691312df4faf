"""A tiny asyncio HTTP server for the lab's real servers: every GET gets 200 and its name.

    python -m lvslab.httpd --name rs1 --port 80 --bind 10.77.1.21 [--echo-port 7]

The body is the name and a newline (``rs1\\n``) so a client can count which server answered;
the ``X-Client`` header echoes the peer address the server saw (NAT keeps the client's).
HTTP/1.1 keep-alive is honoured; thousands of concurrent connections are fine.
With ``--echo-port`` the same process also serves the line echo of ``lvslab.echo``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import sys

from .echo import start_echo

MAX_HEAD = 16384
IDLE = 30.0


def response(name: str, method: str, version: str, keep_alive: bool,
             client: str) -> bytes:
    """The bytes of the reply to one request (pure)."""
    if method in ("GET", "HEAD"):
        status, body = "200 OK", f"{name}\n".encode()
    else:
        status, body = "405 Method Not Allowed", b"only GET\n"
    head = [f"{version if version.startswith('HTTP/') else 'HTTP/1.0'} {status}",
            "Content-Type: text/plain", f"Content-Length: {len(body)}",
            f"X-Server: {name}", f"X-Client: {client}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    if method != "GET" and method != "HEAD":
        head.append("Allow: GET, HEAD")
    data = ("\r\n".join(head) + "\r\n\r\n").encode()
    return data if method == "HEAD" else data + body


def wants_keep_alive(version: str, headers: list[str]) -> bool:
    """HTTP/1.1 keeps the connection unless ``Connection: close``; 1.0 only if asked."""
    conn = ""
    for line in headers:
        key, _, value = line.partition(":")
        if key.strip().lower() == "connection":
            conn = value.strip().lower()
    if version == "HTTP/1.1":
        return conn != "close"
    return conn == "keep-alive"


class Server:
    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        client = f"{peer[0]}:{peer[1]}"
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split()
                method = parts[0] if parts else ""
                version = parts[2] if len(parts) > 2 else "HTTP/1.0"
                keep = wants_keep_alive(version, lines[1:])
                self.requests += 1
                writer.write(response(self.name, method, version, keep, client))
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(name: str, bind: str, port: int, echo_port: int = 0) -> None:
    """Serve until SIGTERM/SIGINT (and the line echo on ``echo_port`` unless 0)."""
    _raise_nofile()
    srv = Server(name)
    server = await asyncio.start_server(srv.handle, bind, port, backlog=4096,
                                        limit=MAX_HEAD, reuse_address=True)
    echo = await start_echo(name, bind, echo_port) if echo_port else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"httpd {name} listening on {bind}:{port}"
          + (f", echo on port {echo_port}" if echo else ""), flush=True)
    async with server:
        await stop.wait()
    if echo is not None:
        echo[0].close()
        print(f"echo {name}: {echo[1].connections} connections, {echo[1].lines} lines",
              flush=True)
    print(f"httpd {name} stopping after {srv.requests} requests", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lvslab.httpd", description=__doc__
                                     .splitlines()[0])
    parser.add_argument("--name", required=True, help="answered in every body")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--echo-port", type=int, default=0,
                        help="also serve the line echo (lvslab.echo) on this port; 0: no")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.name, args.bind, args.port, args.echo_port))
    except OSError as exc:
        ports = f"{args.port}" + (f" or {args.echo_port}" if args.echo_port else "")
        print(f"httpd {args.name}: cannot listen on {args.bind}:{ports}: {exc.strerror}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
