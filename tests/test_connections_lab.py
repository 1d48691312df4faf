"""The connection benchmark's instrument in a real lab (pulse agents, nftables, the echo):
it sees connections survive when nothing happens, and sees them die when they do.

Survival through failovers is the mechanisms' business (their tests); these only show
that bench/connections.py can tell survived from lost, and which real server it was.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from bench.conn_lab import PLANES, Options, Runner, running_lab
from lvslab import Lab, netns

pytestmark = pytest.mark.netns
NET = 40 + os.getpid() % 20


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    for ns in netns.namespaces():  # labs of dead runs
        m = re.match(r"^cb(\d+)-", ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            Lab(f"cb{m.group(1)}").down()
    opts = Options(connections=24, sources=6, settle_max=10.0, routers=2,
                   workdir=tmp_path_factory.mktemp("connbench"), prefix=f"cb{os.getpid()}",
                   public=f"10.{NET}.0.0/24", private=f"10.{NET}.1.0/24")
    with running_lab(opts, PLANES["nftables"], "wrr", preempt=False, tag="t") as (_, run):
        yield run


def test_without_a_fault_every_connection_survives(runner: Runner) -> None:
    t = runner.trial("none", 1)
    assert t.outcomes == {"survived": 24}, t
    assert set(t.servers) == {"rs1", "rs2"}  # spread over both real servers (wrr)
    assert t.stall_max < 1.0 and t.note == ""


def test_a_dead_real_server_is_seen_in_its_connections_only(runner: Runner) -> None:
    t = runner.trial("server", 2)  # SIGKILL of rs1's httpd and echo, then restarted
    on_rs1, on_rs2 = t.servers.get("rs1", 0), t.servers.get("rs2", 0)
    assert on_rs1 and on_rs2, t
    assert t.survived == on_rs2, t
    lost = {k: n for k, n in t.outcomes.items() if k != "survived"}
    assert sum(lost.values()) == on_rs1 and set(lost) <= {"closed", "reset"}, t
