"""The cluster's history in a real lab: a crash of the active produces a failover event
naming the old and the new active, ``lvsctl events -f`` prints it as it happens, and a
switchover and a real server going down are recorded too (heavy: namespaces, agents)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.failover_kit import LVSCTL, Cluster, lab_for, netns_mark, wait_for

pytestmark = netns_mark


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with lab_for("w", routers=2) as c:
        yield c


class Follower:
    """``lvsctl events -f -o json`` running in the client namespace; its lines as they come."""

    def __init__(self, cluster: Cluster) -> None:
        self.proc = cluster.lab.popen("client", LVSCTL, "--etcd", cluster.lab.etcd_endpoints,
                                      "events", "-f", "-n", "0", "-o", "json",
                                      stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line))

    def next(self, kind: str, within: float = 20.0, state: str | None = None,
             ) -> tuple[float, dict[str, Any]]:
        """The next event of ``kind`` (a health transition to ``state``) printed, and when
        it was printed (monotonic)."""
        end = time.monotonic() + within
        while True:
            try:
                at, line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"lvsctl events -f printed no {kind} event in "
                                     f"{within:g}s") from None
            event = json.loads(line)
            if event["kind"] == kind and state in (None, event["event"].get("state")):
                return at, event

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@pytest.fixture
def follower(cluster: Cluster) -> Iterator[Follower]:
    cluster.restore()
    f = Follower(cluster)
    time.sleep(1.5)  # watching by now
    yield f
    f.close()


def last(cluster: Cluster, kind: str) -> dict[str, Any]:
    proc = cluster.lvsctl("history", "--kind", kind, "-n", "1", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    (event,) = json.loads(proc.stdout)["events"]
    return event


def test_a_crash_is_a_failover_event_printed_as_it_happens(cluster: Cluster,
                                                           follower: Follower) -> None:
    old = cluster.restore()
    crash = time.monotonic()
    cluster.lab.kill(old, link_down=True)
    new = cluster.wait_one_holder(other_than=old)
    printed, event = follower.next("failover")
    doc = event["event"]
    assert (doc["previous"], doc["node"]) == (old, new), doc
    assert doc["term"] > doc["previous_term"] > 0
    assert old in doc["reason"] and "silent" in doc["reason"], doc["reason"]
    # The gap as the new active saw it: from its last heartbeat from old to its VIPs up.
    took = printed - crash
    assert doc["gap_ms"] is not None and 0 < doc["gap_ms"] < took * 1000 + 1000, (doc, took)
    assert took < 15, f"printed {took:.1f}s after the crash"
    assert f"{new} took over from {old}" in event["summary"]
    assert last(cluster, "failover") == event


def test_a_switchover_says_who_asked(cluster: Cluster, follower: Follower) -> None:
    old = cluster.restore()
    asked = cluster.lvsctl("switchover")
    assert asked.returncode == 0, asked.stderr
    _, event = follower.next("switchover")
    doc = event["event"]
    assert doc["previous"] == old and doc["node"] != old
    assert doc["reason"] == "lvsctl switchover" and "@" in doc["by"], doc
    assert doc["gap_ms"] is not None and doc["gap_ms"] < 5000, doc
    assert last(cluster, "switchover") == event


def test_a_real_server_down_is_a_health_transition(cluster: Cluster,
                                                   follower: Follower) -> None:
    active = cluster.restore()
    server = cluster.lab.servers[0]
    cluster.lab.kill(server)
    try:
        _, event = follower.next("health", state="down")
        doc = event["event"]
        assert (doc["server"], doc["previous"], doc["state"], doc["by"]) == (
            server, "up", "down", active), doc
    finally:
        cluster.lab.start(server)
    _, event = follower.next("health", within=60, state="up")  # after reentry (15 s)
    assert event["event"]["server"] == server and event["event"]["previous"] == "down"
    wait_for(lambda: cluster.one_holder() == active, what="the active to stay")
