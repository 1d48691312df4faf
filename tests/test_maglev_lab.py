"""scheduler = mh without any state sync, in the connection benchmark's lab (pulse agents,
nftables, the echo virtual): every connection through the VIP survives a crash of the
active router, because the new active's Maglev table (same config, same seed from etcd)
sends each flow to the real server it was on, and its kernel takes the flow up mid-stream.
"""

from __future__ import annotations

import os
import re

import pytest

from bench.conn_lab import PLANES, Options, running_lab
from lvslab import Lab, netns

pytestmark = pytest.mark.netns
NET = 60 + os.getpid() % 20


def test_mh_connections_survive_a_crash_failover_without_sync(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    for ns in netns.namespaces():  # labs of dead runs
        m = re.match(r"^mh(\d+)-", ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            Lab(f"mh{m.group(1)}").down()
    # 12 client addresses: all on one of the two servers by chance has odds 2 ** -11 (with
    # 6 it was 1 in 32, and it happened: the hash seed is new in every lab).
    opts = Options(connections=24, sources=12, settle_max=10.0, routers=2, workdir=tmp_path,
                   prefix=f"mh{os.getpid()}", public=f"10.{NET}.0.0/24",
                   private=f"10.{NET}.1.0/24")
    with running_lab(opts, PLANES["nftables"], "mh", preempt=False, tag="mh") as (_, run):
        t = run.trial("crash", 1)
    assert t.outcomes == {"survived": 24}, t
    assert set(t.servers) == {"rs1", "rs2"}, t  # spread by source address over both
