"""What the role machine sees: one :class:`~agent.role.World` sampled from the live parts."""

from __future__ import annotations

from cluster.etcd.lease import LeaseKeeper

from .heartbeat import HeartbeatService
from .role import Leader, Peer, World
from .stall import StallWatch
from .topology import RouterPlan
from .view import ClusterView

INF = float("inf")


def etcd_ok(lease: LeaseKeeper | None, now: float) -> bool:
    """etcd answered recently: a lease refresh was confirmed within min(1 s, TTL/2)."""
    if lease is None or lease.confirmed_at is None:
        return False
    return now - lease.confirmed_at < min(1.0, lease.granted_ttl / 2)


def peers(plan: RouterPlan, hb: HeartbeatService | None, view: ClusterView) -> tuple[Peer, ...]:
    """Every other configured router, from its heartbeats and its etcd registration."""
    registered = view.registered()
    out = []
    for r in plan.peers:
        pv = hb.table.view(r.name) if hb else None
        out.append(Peer(
            name=r.name, priority=r.priority, eligible=r.active,
            alive=hb.alive(r.name) if hb else False,
            registered=r.name in registered,
            active_heard=pv.last_heard if pv and pv.role == "active" else None,
            active_term=pv.term if pv else 0,
            acked_send=hb.acked_since(r.name) if hb else None,
            etcd_ok=pv.etcd_ok if pv else False,
        ))
    return tuple(out)


def licence_world(*, now: float, node: str, plan: RouterPlan,
                  heartbeat: HeartbeatService | None, lease: LeaseKeeper | None,
                  stall: StallWatch | None) -> World:
    """Just what the licence depends on (lease and acknowledgements): cheap enough to ask at
    the instant of every act."""
    peers = tuple(Peer(name=r.name, priority=r.priority, eligible=r.active,
                       acked_send=heartbeat.acked_since(r.name) if heartbeat else None)
                  for r in plan.peers)
    return World(now=now, me=node, priority=plan.me.priority, peers=peers,
                 **_lease_fields(lease), stall_fence=stall.hold_fence if stall else -INF)


def _lease_fields(lease: LeaseKeeper | None) -> dict[str, object]:
    if lease is None:
        return {"lease_deadline": -INF, "lease_sent": -INF, "lease": None}
    sent = lease.confirmed_at
    return {"lease_deadline": lease.deadline, "lease": lease.lease_id,
            "lease_sent": sent if sent is not None else -INF}


def sample_world(*, now: float, node: str, plan: RouterPlan, heartbeat: HeartbeatService | None,
                 lease: LeaseKeeper | None, view: ClusterView, started: float,
                 stopping: bool, stall: StallWatch | None = None,
                 conn_warm_at: float = -INF) -> World:
    """The role machine's world now. ``conn_warm_at``: when our connection table is warm
    (:func:`agent.dataplane.warmth.warm_at` of the state syncs we run)."""
    leader = (Leader(view.leader.node, view.leader.term, view.leader.lease)
              if view.leader else None)
    released = view.released()
    switch = view.switchover()
    return World(
        now=now, me=node, priority=plan.me.priority, eligible=plan.me.active,
        **_lease_fields(lease),  # type: ignore[arg-type]
        etcd_ok=etcd_ok(lease, now),
        leader_known=view.leader_known, leader=leader,
        leader_absent_since=view.leader_absent_since, last_term=view.last_term,
        started_at=started,
        released=Leader(*released) if released else None,
        switchover_to=switch[0] if switch else None,
        switchover_term=switch[1] if switch else 0,
        preempt=plan.preempt, stopping=stopping, peers=peers(plan, heartbeat, view),
        evict_votes=view.evict_votes(),
        stall_fence=stall.hold_fence if stall else -INF,
        conn_warm_at=conn_warm_at,
    )
