"""The lab's etcd as a three-member cluster (issue 11).

* the three members, each in its own namespace, form one cluster with a leader, and every
  agent is connected to every member;
* the etcd leader killed under a serving VIP: the others elect a new one, the agents' lease
  lives in the cluster and survives the change, so the active router keeps its VIP (ARP
  probers on both LANs, an HTTP prober) and the leader key keeps its lease: no failover;
* the killed member restarts with its data dir and rejoins the same cluster, catching up
  on what was written while it was down;
* cut from its peers, a member loses the cluster while the others keep a leader.

A real lab: three etcd members, two routers running pulse, one real server.
"""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
from support.failover_kit import Cluster, lab_for, measured, netns_mark, wait_for

from cluster.keys import Keys
from lvslab import Lab
from lvslab.procs import venv_tool

pytestmark = netns_mark


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    with lab_for("k", routers=2, etcd_members=3) as c:
        yield c


def etcdctl(lab: Lab, *args: str, endpoints: str | None = None) -> str:
    res = lab.exec("client", "etcdctl", "--endpoints", endpoints or lab.etcd_endpoints,
                   "--command-timeout=3s", *args, timeout=20)
    assert res.returncode == 0, res.stderr
    return res.stdout


def leader_key(cluster: Cluster) -> tuple[int, int]:
    """(lease, create revision) of the routers' leader key: both change on a re-election."""
    key = Keys(cluster.lab.topology.cluster).leader
    (kv,) = json.loads(etcdctl(cluster.lab, "get", key, "-w", "json"))["kvs"]
    return kv["lease"], kv["create_revision"]


def node_leases(cluster: Cluster, endpoints: str | None = None) -> dict[str, int]:
    """Each router's node key -> the lease it is bound to (a new lease: the old one lapsed)."""
    keys = Keys(cluster.lab.topology.cluster)
    out = json.loads(etcdctl(cluster.lab, "get", "--prefix", keys.nodes_prefix, "-w", "json",
                             endpoints=endpoints))
    return {base64.b64decode(kv["key"]).decode(): kv["lease"] for kv in out.get("kvs", [])}


def established(lab: Lab, host: str) -> set[str]:
    """The etcd members ``host`` has an established TCP connection to."""
    out = lab.exec(host, "ss", "-Htn", "state", "established", check=True).stdout
    # the peer column: 10.77.0.2:2379, or [::ffff:10.77.0.2]:2379 from a dual-stack socket
    peers = set(re.findall(r"(\d+\.\d+\.\d+\.\d+)\]?:2379\b", out))
    return {m for m in lab.etcd_names if lab.address(m) in peers}


def test_three_members_form_one_cluster_and_every_agent_uses_them_all(cluster):
    lab = cluster.lab
    assert lab.etcd_names == ["etcd1", "etcd2", "etcd3"]
    assert len({lab.ns(m) for m in lab.etcd_names}) == 3
    leader = lab.wait_etcd()
    seen = lab.etcd_status()
    assert set(seen) == set(lab.etcd_names)
    assert len({s.cluster_id for s in seen.values()}) == 1
    assert {s.leader_id for s in seen.values()} == {seen[leader].member_id}
    members = json.loads(etcdctl(lab, "member", "list", "-w", "json"))["members"]
    assert sorted((m["name"], m["peerURLs"][0], m["clientURLs"][0]) for m in members) == [
        (m, f"http://{lab.address(m)}:2380", f"http://{lab.address(m)}:2379")
        for m in lab.etcd_names]
    for router in lab.routers:
        cmd = lab.command(router)
        assert cmd[cmd.index("--etcd") + 1] == lab.etcd_endpoints
        wait_for(lambda r=router: established(lab, r) == set(lab.etcd_names),
                 what=f"{router}'s agent connected to every member")


def test_the_etcd_leader_killed_keeps_the_vip_and_rejoins_with_its_data(cluster):
    lab = cluster.lab
    active = cluster.restore()
    before = leader_key(cluster)
    ids = {name: st.member_id for name, st in lab.etcd_status().items()}
    with cluster.watch(http=True) as watch:
        start = time.monotonic()
        killed = lab.kill_etcd_leader()
        new = wait_for(lab.etcd_leader, what="a new etcd leader")
        elected = time.monotonic()
        assert new != killed and not lab.alive(killed)
        assert "OK" in etcdctl(lab, "put", "/lab-test/while-down", "yes")
        time.sleep(6)  # three lease TTLs: a lease lost with the old leader would be gone
        assert cluster.healthy() == active
        assert leader_key(cluster) == before  # the same lease, never re-elected
        lab.start(killed)
        back = time.monotonic()
        wait_for(lambda: (st := lab.etcd_status()).get(killed) is not None
                 and st[killed].leader_id == ids[new], what=f"{killed} following {new}")
        rejoined = time.monotonic()
        assert cluster.healthy() == active
        end = time.monotonic()
    # the same member, not a fresh cluster, and it has what was written while it was down
    assert lab.etcd_status()[killed].member_id == ids[killed]
    alone = lab.topology.etcd_member_url(killed)
    assert etcdctl(lab, "get", "/lab-test/while-down", "--print-value-only",
                   "--consistency=s", endpoints=alone).strip() == "yes"
    assert leader_key(cluster) == before
    report = watch.report
    report.assert_one_owner_at_a_time()
    assert report.owners() == report.owners(cluster.gateway) == [active]
    assert report.gaps(start, end) == report.gaps(start, end, cluster.gateway) == []
    assert report.outages(start) == []
    measured("etcd leader killed (3 members)", killed=killed, new_leader=new,
             elected_after=elected - start, rejoined_after=rejoined - back,
             http_requests=len([r for r in report.http if r.start > start]))


def test_a_member_cut_from_its_peers_leaves_the_others_a_leader(cluster):
    """The cut member knows no leader, the other two keep one and serve; the VIP stays
    where it is, and no router's lease lapses: the agents require a leader on every call
    (``hasleader``), so the cut member refuses their requests at once and they go to
    another member. (Without it, a refresh sent there waits for a leader it cannot reach,
    and leases lapsed about every 2.5 s.)"""
    lab = cluster.lab
    active = cluster.restore()
    leases = node_leases(cluster)
    assert len(leases) == 2
    follower = next(m for m in lab.etcd_names if m != lab.wait_etcd())
    majority = ",".join(lab.topology.etcd_member_url(m) for m in lab.etcd_names
                        if m != follower)
    with cluster.watch() as watch:
        start = time.monotonic()
        lab.cut_etcd_peers(follower)
        try:
            wait_for(lambda: (st := lab.etcd_status().get(follower)) is not None
                     and st.leader_id == 0, what=f"{follower} to lose its leader")
            assert lab.etcd_leader() not in (None, follower)
            assert "OK" in etcdctl(lab, "put", "/lab-test/cut", "yes", endpoints=majority)
            time.sleep(6)  # three lease TTLs
            assert cluster.one_holder() == active
            assert node_leases(cluster, majority) == leases
            # our client asks for a leader: the cut member refuses at once, no 5 s wait
            alone = lab.exec("client", venv_tool("lvsctl"), "--etcd",
                             lab.topology.etcd_member_url(follower), "status", timeout=30)
            assert alone.returncode != 0
            assert "no leader" in alone.stdout + alone.stderr
        finally:
            lab.restore_etcd_peers(follower)
        wait_for(lambda: (st := lab.etcd_status().get(follower)) is not None
                 and st.leader_id != 0, what=f"{follower} back in the cluster")
        assert cluster.wait_healthy() == active
        end = time.monotonic()
    assert etcdctl(lab, "get", "/lab-test/cut", "--print-value-only", "--consistency=s",
                   endpoints=lab.topology.etcd_member_url(follower)).strip() == "yes"
    report = watch.report
    report.assert_one_owner_at_a_time()
    assert report.owners() == report.owners(cluster.gateway) == [active]
    assert report.gaps(start, end) == report.gaps(start, end, cluster.gateway) == []
