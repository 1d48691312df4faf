"""Where the connections to nudge come from: the kernel tables the state sync filled."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path

from .flows import Flow, from_conntrack, from_ip_vs_conn

IP_VS_CONN = Path("/proc/net/ip_vs_conn")


def _conntrack(vips: Collection[str]) -> list[Flow]:
    from pyroute2 import Conntrack

    ct = Conntrack()
    try:
        return from_conntrack(ct.dump_entries(), vips)
    finally:
        ct.close()


async def synced_flows(plane: str, vips: Collection[str]) -> list[Flow]:
    """The NAT'ed TCP connections to ``vips`` in our kernel: conntrack's for the nftables
    data plane, IPVS's own table for IPVS. Blocking reads run in a thread."""
    if plane == "ipvs":
        text = await asyncio.to_thread(IP_VS_CONN.read_text)
        return from_ip_vs_conn(text, vips)
    return await asyncio.to_thread(_conntrack, vips)
