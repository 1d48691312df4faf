"""Where the connections to nudge come from: the kernel tables the state sync filled."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path

from ..subproc import communicate
from .flows import Flow, from_conntrack, from_ip_vs_conn

IP_VS_CONN = Path("/proc/net/ip_vs_conn")
# The conntrack tool (Debian `conntrack`), not pyroute2's Conntrack: that parses 0.3 ms per
# entry in Python (0.3 s for 1,000 connections, at the moment the clients wait), the tool
# 17 ms for the same 1,000.
CONNTRACK = ("conntrack", "-L", "-p", "tcp", "--state", "ESTABLISHED")
LIMIT = 10.0  # seconds for the listing
INLINE = 300_000  # characters (about 2,000 connections) parsed on the event loop itself


async def synced_flows(plane: str, vips: Collection[str]) -> list[Flow]:
    """The NAT'ed TCP connections to ``vips`` in our kernel: conntrack's for the nftables
    data plane, IPVS's own table for IPVS. OSError or TimeoutError if it cannot be read."""
    loop = asyncio.get_running_loop()
    if plane == "ipvs":
        text = await loop.run_in_executor(None, IP_VS_CONN.read_text)
        return await loop.run_in_executor(None, from_ip_vs_conn, text, vips)
    proc = await asyncio.create_subprocess_exec(
        *CONNTRACK, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await communicate(proc, LIMIT)
    text = out.decode(errors="replace")
    if len(text) < INLINE:
        return from_conntrack(text, vips)
    # Parsed in a thread: 100,000 lines take a few tenths of a second.
    return await loop.run_in_executor(None, from_conntrack, text, vips)
