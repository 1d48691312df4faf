"""The nemesis' fault catalogue and its schedule: pure data and a seeded plan, no I/O.

Every fault kind says what it hits, how long it is held, the longest service gap it may
cause (docs/faults.md is generated from :data:`KINDS`) and whether the design keeps open
connections through it. :func:`plan` turns a seed into a schedule of steps, alone and
overlapping, in which no two steps hold the same resource at once (one fault per router,
one etcd fault, one real-server fault ...), so every step can be healed on its own. A
step aimed at the active router (:data:`ACTIVE`) finds out which router that is when it
starts; the runner skips it if that router is already under another fault.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

NO_GAP = 0.5  # s: a "no gap" bound; the HTTP prober's own timeouts (0.1 s) under load
FAILOVER = 4.0  # s: a crash failover at the lab's timers (p99 2.4 s measured) plus slack


@dataclass(frozen=True)
class Kind:
    """One kind of fault."""

    name: str
    target: str  # router | pair | member | etcd | server | config | host
    hold: tuple[float, float]  # seconds it is held (uniform); (0, 0): a single act
    gap: float  # longest service gap it may cause (s), beyond ``hold`` if gap_holds
    why: str  # the reason for that bound (docs/faults.md)
    gap_holds: bool = False  # the gap may last as long as the fault is held
    keeps_connections: bool = True  # the design keeps open connections through it
    weight: float = 1.0


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("crash", "router", (2.0, 8.0), FAILOVER,
         "links down and every process SIGKILLed; the backups take over after deadtime "
         "and the lease's expiry, conntrackd synced the flows", weight=2),
    Kind("sigkill", "router", (1.0, 6.0), FAILOVER,
         "the agent alone SIGKILLed; its VIP guardian drops the VIPs, a backup takes over "
         "as after a crash", weight=1.5),
    Kind("sigkill-family", "router", (1.0, 6.0), FAILOVER,
         "agent and guardian SIGKILLed, links up: the VIP's address lifetime ends its "
         "claim, a backup takes over"),
    Kind("freeze-short", "router", (0.3, 1.5), NO_GAP,
         "SIGSTOP below the deadtime and the lease TTL: nobody notices, the kernel keeps "
         "forwarding"),
    Kind("freeze-long", "router", (3.0, 6.0), FAILOVER,
         "SIGSTOP beyond the lease TTL: a backup takes over; the frozen one must not "
         "answer for the VIP once unlicensed, nor on waking"),
    Kind("sigterm", "router", (0.5, 3.0), 1.0,
         "graceful stop: the active releases and a backup takes over at once"),
    Kind("switchover", "host", (0.0, 0.0), 1.0,
         "`lvsctl switchover`: the active hands over to the best backup"),
    Kind("cut-etcd", "router", (2.0, 8.0), FAILOVER,
         "one router cut from every etcd member: an active keeps its VIP on its peers' "
         "acknowledgements or hands over once they take over"),
    Kind("partition", "pair", (2.0, 8.0), NO_GAP,
         "no heartbeats between two routers (both ways); etcd still decides, nobody "
         "moves"),
    Kind("drop-heartbeats", "pair", (2.0, 8.0), NO_GAP,
         "one router stops hearing another's heartbeats (one way); nobody moves"),
    Kind("isolate", "router", (2.0, 8.0), FAILOVER,
         "every link of a router down; its processes run on: like a crash, and on "
         "reconnecting it must not claim the VIP back"),
    Kind("link-flap", "router", (0.2, 1.0), NO_GAP,
         "one link of a router down briefly; an active's VIP stays, its traffic waits",
         gap_holds=True),
    Kind("etcd-member", "member", (2.0, 8.0), NO_GAP,
         "one etcd member killed (perhaps the leader): the others keep a quorum"),
    Kind("etcd-leader", "etcd", (2.0, 8.0), NO_GAP,
         "the etcd leader killed: the others elect one within an election timeout; "
         "leases live in the cluster"),
    Kind("etcd-quorum", "etcd", (2.0, 8.0), NO_GAP,
         "two of three etcd members killed (no quorum): the active keeps its VIP on its "
         "peers' acknowledgements, nobody takes over"),
    Kind("etcd-down", "etcd", (2.0, 8.0), NO_GAP,
         "every etcd member killed: as without a quorum"),
    Kind("etcd-peers", "member", (2.0, 8.0), NO_GAP,
         "one etcd member cut from the others; the agents require a leader and use the "
         "other members"),
    Kind("server-crash", "server", (2.0, 8.0), 3.0,
         "a real server's links down and its daemons killed: requests sent to it fail "
         "until its health check (timeout 1 s) takes it out; its connections are lost",
         keeps_connections=False),
    Kind("server-flap", "server", (2.0, 6.0), 3.0,
         "a real server's links go down and up every 0.5-1.5 s: the health checks follow "
         "it; connections to it may be lost", keeps_connections=False),
    Kind("config-valid", "config", (0.0, 0.0), NO_GAP,
         "a valid lvs.cf pushed (a weight changed): applied without a gap"),
    Kind("config-invalid", "config", (0.0, 0.0), NO_GAP,
         "an invalid lvs.cf pushed: lvsctl refuses it, nothing changes"),
    Kind("config-server", "config", (2.0, 8.0), NO_GAP,
         "a real server removed from the config, then added back: requests go to the "
         "others; connections to it end", keeps_connections=False),
    Kind("junk", "host", (1.0, 6.0), NO_GAP,
         "junk written under the cluster's etcd prefix (bad JSON, unknown keys): counted "
         "and ignored"),
    Kind("forged-heartbeats", "host", (1.0, 6.0), NO_GAP,
         "heartbeats with a bad MAC, validly signed ones of a run an hour old, and real "
         "ones captured a moment before, sent again from their senders' addresses: "
         "rejected and counted"),
    Kind("cpu", "host", (2.0, 8.0), 1.0,
         "every core saturated by busy processes: nothing moves, the prober may be slow"),
)}

TARGETS = {"router", "pair", "member", "etcd", "server", "config", "host"}
ACTIVE = "@active"  # a router step aimed at whichever router is active when it starts


@dataclass(frozen=True)
class Step:
    """One fault of the schedule: kind ``kind`` on ``target`` from ``at`` for ``hold`` s."""

    index: int
    at: float  # seconds after the campaign's start
    kind: str
    target: str  # a router, "r1>r2" (pair), a member, a server, or "" (host-wide)
    hold: float
    seed: int  # the step's own randomness (which weight, forged bytes, flap times)

    @property
    def end(self) -> float:
        return self.at + self.hold


@dataclass(frozen=True)
class Shape:
    """What the plan needs to know of the lab: its routers, etcd members, real servers."""

    routers: tuple[str, ...]
    members: tuple[str, ...]
    servers: tuple[str, ...]


def resources(step: Step, lab: Shape) -> set[str]:
    """What a step holds while it lasts (two steps holding one resource never overlap)."""
    kind = KINDS[step.kind]
    if kind.target == "router":
        # aimed at the active: the runner skips it if that router is busy when it starts
        return {step.target}
    if kind.target == "pair":
        return set(step.target.split(">"))
    if kind.target in ("member", "etcd"):
        return {"etcd"}
    if kind.target == "server":
        return {"servers"}
    if kind.target == "config":
        return {"config", "servers"} if step.target else {"config"}
    return {step.kind}  # host-wide faults: one of each kind at a time


def plan(seed: int, seconds: float, lab: Shape, kinds: Sequence[str] | None = None,
         mean_gap: float = 3.0, start: float = 3.0, active_share: float = 0.6,
         ) -> list[Step]:
    """The schedule of a campaign of ``seconds``: a step every ``mean_gap`` s on average
    (exponential), from ``start``, each ending by ``seconds``. Router faults hit the
    active router with probability ``active_share``, else a random router."""
    names = list(kinds) if kinds is not None else list(KINDS)
    unknown = [k for k in names if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown fault kinds: {', '.join(unknown)} "
                         f"(known: {', '.join(KINDS)})")
    if len(lab.members) < 3:
        names = [k for k in names if KINDS[k].target not in ("member", "etcd")
                 or k == "etcd-down"]
    if not names:
        raise ValueError("no fault kind left to plan")
    rng = random.Random(seed)
    steps: list[Step] = []
    t = start
    while True:
        t += rng.expovariate(1.0 / mean_gap)
        if t >= seconds:
            return steps
        for _ in range(8):  # a few tries to find a step whose resources are free
            step = _draw(rng, names, lab, len(steps), round(t, 3), active_share)
            if step.end > seconds:
                continue
            busy = set().union(*(resources(s, lab) for s in steps if s.end > step.at))
            if not busy & resources(step, lab):
                steps.append(step)
                break


def _draw(rng: random.Random, names: Sequence[str], lab: Shape, index: int, at: float,
          active_share: float) -> Step:
    name = rng.choices(names, weights=[KINDS[n].weight for n in names])[0]
    kind = KINDS[name]
    lo, hi = kind.hold
    hold = round(rng.uniform(lo, hi), 3)
    target = ""
    if kind.target == "router":
        target = ACTIVE if rng.random() < active_share else rng.choice(lab.routers)
    elif kind.target == "pair":
        a, b = rng.sample(lab.routers, 2)
        target = f"{a}>{b}"
    elif kind.target == "member":
        target = rng.choice(lab.members)
    elif kind.target == "server" or name == "config-server":
        target = rng.choice(lab.servers)
    return Step(index, at, name, target, hold, rng.getrandbits(32))


def allowed_gap(steps: Sequence[Step]) -> float:
    """The longest gap the overlapping ``steps`` may cause together: the sum of their
    bounds (a second failover during a first adds its own)."""
    total = 0.0
    for s in steps:
        kind = KINDS[s.kind]
        total += kind.gap + (s.hold if kind.gap_holds else 0.0)
    return max(total, NO_GAP)


def dump(steps: Sequence[Step]) -> str:
    return json.dumps([asdict(s) for s in steps], indent=1)


def load(text: str) -> list[Step]:
    """Steps from :func:`dump`'s JSON (a replay)."""
    return [Step(**d) for d in json.loads(text)]


def faults_table() -> str:
    """The markdown table of docs/faults.md: fault, gap bound, connections kept, why."""
    lines = ["| fault | longest service gap | connections kept | why |", "|---|---|---|---|"]
    for kind in KINDS.values():
        bound = f"{kind.gap:g} s" + (" + hold" if kind.gap_holds else "")
        keeps = "yes" if kind.keeps_connections else "no"
        lines.append(f"| `{kind.name}` | {bound} | {keeps} | {kind.why} |")
    return "\n".join(lines)
