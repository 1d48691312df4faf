"""Where the connections to nudge come from: the kernel tables the state sync filled."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .flows import Flow, from_conntrack, from_ip_vs_conn

IP_VS_CONN = Path("/proc/net/ip_vs_conn")
# Our own thread: at a takeover the default executor may be busy with other work, and the
# list is wanted the moment the VIPs are up.
_READER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resume-read")


def _conntrack(vips: Collection[str]) -> list[Flow]:
    from pyroute2 import Conntrack

    ct = Conntrack()
    try:
        return from_conntrack(ct.dump_entries(), vips)
    finally:
        ct.close()


async def synced_flows(plane: str, vips: Collection[str]) -> list[Flow]:
    """The NAT'ed TCP connections to ``vips`` in our kernel: conntrack's for the nftables
    data plane, IPVS's own table for IPVS. Blocking reads run in a thread of our own."""
    loop = asyncio.get_running_loop()
    if plane == "ipvs":
        text = await loop.run_in_executor(_READER, IP_VS_CONN.read_text)
        return from_ip_vs_conn(text, vips)
    return await loop.run_in_executor(_READER, _conntrack, vips)
