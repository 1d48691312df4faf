"""A load client for lab tests, run inside the client namespace.

    python tests/support/lbclient.py VIP COUNT [--concurrency N] [--timeout S]

Makes COUNT HTTP/1.0 requests, each on a new TCP connection, and prints one JSON object:
{"answers": {"rs1": n, ...}, "errors": {"reason": n}}. The lab's httpd answers its name.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json


async def one(vip: str, port: int, timeout: float) -> str:
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(vip, port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            data = await reader.read()
            writer.close()
    except TimeoutError:
        return "!timeout"
    except OSError as exc:
        return f"!{type(exc).__name__}"
    body = data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()
    return body or "!empty"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("vip")
    ap.add_argument("count", type=int)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=3.0)
    args = ap.parse_args()
    sem = asyncio.Semaphore(args.concurrency)

    async def guarded() -> str:
        async with sem:
            return await one(args.vip, args.port, args.timeout)

    results = await asyncio.gather(*(guarded() for _ in range(args.count)))
    answers = collections.Counter(r for r in results if not r.startswith("!"))
    errors = collections.Counter(r[1:] for r in results if r.startswith("!"))
    print(json.dumps({"answers": answers, "errors": errors}))


if __name__ == "__main__":
    asyncio.run(main())
