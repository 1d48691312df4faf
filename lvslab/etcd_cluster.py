"""The lab's etcd cluster as its members report it: who answers, who leads.

``etcdctl endpoint status -w json`` against every member (run in a lab namespace) gives,
per member that answers, its member id, the leader it follows and its raft term and index.
Members that do not answer are left out (etcdctl then exits 1 but still prints the rest).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass

from . import netns
from .netns import LabError
from .topology import Topology


@dataclass(frozen=True)
class MemberStatus:
    """One member's answer to ``endpoint status``."""

    name: str
    member_id: int
    leader_id: int  # 0: it knows no leader
    raft_term: int
    raft_index: int
    cluster_id: int


def parse_status(text: str, topo: Topology) -> dict[str, MemberStatus]:
    """{member name: status} from ``etcdctl endpoint status -w json`` output (the members
    that answered); endpoints that are not the lab's members are ignored."""
    names = dict(zip(topo.etcd_urls, topo.etcd_names, strict=True))
    try:
        rows = json.loads(text or "[]")
    except ValueError as exc:
        raise LabError(f"etcdctl endpoint status: not JSON ({exc}): {text[:200]!r}") from None
    out = {}
    for row in rows if isinstance(rows, list) else []:
        name = names.get(str(row.get("Endpoint", "")))
        st = row.get("Status") or {}
        header = st.get("header") or {}
        if name is None or "member_id" not in header:
            continue
        out[name] = MemberStatus(name, int(header["member_id"]), int(st.get("leader", 0)),
                                 int(st.get("raftTerm", header.get("raft_term", 0))),
                                 int(st.get("raftIndex", 0)), int(header.get("cluster_id", 0)))
    return out


def leader_of(statuses: dict[str, MemberStatus], members: int) -> str | None:
    """The member that leads: it answered, it names itself leader, and a majority of the
    cluster's ``members`` (itself included) follow it. None otherwise (an election under
    way, no quorum, or the leader cut off)."""
    for st in statuses.values():
        if st.leader_id == st.member_id != 0:
            followers = sum(s.leader_id == st.member_id for s in statuses.values())
            if 2 * followers > members:
                return st.name
    return None


def status(topo: Topology, host: str = "client", timeout: float = 0.5,
           members: Iterable[str] | None = None) -> dict[str, MemberStatus]:
    """Ask every member (or only ``members``: each silent one costs ``timeout``) from
    ``host``'s namespace (the client by default)."""
    names = topo.etcd_names if members is None else list(members)
    if not names:
        return {}
    endpoints = ",".join(topo.etcd_member_url(m) for m in names)
    proc = netns.run_in(topo.ns(host), "etcdctl", "--endpoints", endpoints,
                        "endpoint", "status", "-w", "json", f"--command-timeout={timeout}s",
                        "--dial-timeout", f"{timeout}s", check=False, timeout=10 + 2 * timeout,
                        env=dict(os.environ, ETCDCTL_API="3"))
    return parse_status(proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else "",
                        topo)


def leader(topo: Topology, host: str = "client", members: Iterable[str] | None = None
           ) -> str | None:
    """The leading member now (None: no leader, or it does not answer)."""
    return leader_of(status(topo, host, members=members), topo.etcd_members)
