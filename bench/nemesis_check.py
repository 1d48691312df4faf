"""The nemesis' checker: pure functions over a campaign's history, each returning the
violations it finds. No I/O: the runner (bench/nemesis.py) gathers the history.

What is checked (issue 11):

* never two owners of a VIP (ARP answers and the frames captured on both LANs), and no
  frame claiming a VIP from a host that is not a router, nor from a router that did not
  hold it then (its agent's log says when it did);
* no claim from a router frozen past its lease (it is certainly unlicensed then);
* every service gap (HTTP prober) within the bound of the faults around it
  (:func:`bench.nemesis_plan.allowed_gap`; no fault around it: ``NO_GAP``);
* the connections the design promises to keep are kept;
* after the last fault healed the cluster converged (one active, health, kernel tables);
* no agent exited unless the nemesis killed it; no traceback in any log;
* no key of a dead router outlived its lease.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bench.nemesis_plan import KINDS, NO_GAP, Step, allowed_gap

TTL = 2.0  # the lab's lease TTL (s)
SETTLE = 1.0  # s after a bound's end before a gap or a broken connection is no longer its
CONN_GRACE = 12.0  # s a connection may take to notice it is broken (TCP timers)
LOSES_STATE = {"server-crash"}  # its daemons are killed: their connections are gone


@dataclass(frozen=True)
class Applied:
    """A step as it ran: the router it hit (for steps aimed at the active), when it
    started and was healed (monotonic clock), or why it was skipped."""

    step: Step
    router: str = ""
    started: float = 0.0
    healed: float = 0.0
    skipped: str = ""
    note: str = ""

    @property
    def kind(self) -> str:
        return self.step.kind

    @property
    def target(self) -> str:
        return self.router or self.step.target

    def window(self) -> tuple[float, float]:
        """When the step may still explain a gap: from its start to its heal plus its
        bound plus :data:`SETTLE`."""
        return self.started, self.healed + KINDS[self.kind].gap + SETTLE


@dataclass(frozen=True)
class Violation:
    check: str
    t: float
    detail: str
    steps: tuple[int, ...] = ()  # indexes of the steps around it (the replay's suspects)


@dataclass(frozen=True)
class Claim:
    """A frame in which ``router`` claimed ``ip`` (ARP answer, gratuitous ARP, NA)."""

    t: float
    ip: str
    router: str


@dataclass(frozen=True)
class Overlap:
    ip: str
    start: float
    end: float
    owners: tuple[str, ...]


@dataclass(frozen=True)
class Gap:
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Conn:
    """A long-lived connection: its real server, and when it broke (None: kept)."""

    id: int
    server: str
    broke: float | None
    state: str


@dataclass
class History:
    """What the runner recorded."""

    applied: list[Applied]
    overlaps: list[Overlap] = field(default_factory=list)
    foreign: list[Claim] = field(default_factory=list)  # claims from non-routers
    claims: list[Claim] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    conns: list[Conn] = field(default_factory=list)
    holding: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Per router, when its agent said it held its VIPs (from "acquired" to "released")."""
    exits: list[tuple[float, str]] = field(default_factory=list)  # agents gone, not by us
    tracebacks: list[tuple[str, str]] = field(default_factory=list)  # (log, line)
    stale_keys: list[tuple[float, str]] = field(default_factory=list)  # (t, key)
    wrong: list[tuple[float, str]] = field(default_factory=list)  # e.g. a bad config stored
    converged: float | None = None  # s after the last heal; None: never
    convergence: str = ""  # what was still wrong if it never converged


def service_gaps(requests: Iterable[tuple[float, float, bool]]) -> list[Gap]:
    """Stretches without service seen by the HTTP prober: from the end of the last success
    before failed requests to the end of the first success after them."""
    out, last_ok, failed = [], None, False
    for _start, end, ok in sorted(requests):
        if not ok:
            failed = failed or last_ok is not None
        elif failed and last_ok is not None:
            out.append(Gap(last_ok, end))
            failed = False
        if ok:
            last_ok = end
    return out


def around(applied: Sequence[Applied], start: float, end: float) -> list[Applied]:
    """The steps that ran and whose window meets [start, end]."""
    out = []
    for a in applied:
        if a.skipped:
            continue
        lo, hi = a.window()
        if lo <= end and start <= hi:
            out.append(a)
    return out


def check_owners(h: History) -> list[Violation]:
    out = [Violation("two owners", o.start,
                     f"{o.ip} answered by {' and '.join(o.owners)} "
                     f"{o.start:.3f}..{o.end:.3f}",
                     _indexes(around(h.applied, o.start, o.end)))
           for o in h.overlaps]
    out += [Violation("foreign claim", c.t, f"{c.ip} claimed by {c.router}")
            for c in h.foreign]
    return out


DEATHS = {"crash", "sigkill", "sigkill-family", "sigterm"}
EARLY = 0.05  # s a claim may precede the "acquired" line (the kernel answers at once)
# s a claim may follow the "released" line: a reply the kernel sent just before the address
# went reaches the prober after it, and agent log times are mapped to the probers' clock
# within a few ms (with ARP probes every 10 ms, such a last reply is seen in most releases)
LATE = 0.05


def check_claims_held(h: History, ttl: float = TTL) -> list[Violation]:
    """Every frame claiming a VIP comes from a router that held it then: between its
    agent's "acquired" and "released" lines, and no longer than the lease TTL after the
    agent died (its VIP guardian, the address lifetime or the fence end the claim by
    then). Routers absent from ``holding`` are not judged (no log)."""
    ends: dict[str, list[float]] = {}
    for a in h.applied:
        if not a.skipped and a.kind in DEATHS:
            ends.setdefault(a.target, []).append(a.started + ttl)
    for t, router in h.exits:
        ends.setdefault(router, []).append(t + ttl)
    out = []
    for c in h.claims:
        if c.router not in h.holding:
            continue
        ok = False
        for start, end in h.holding[c.router]:
            end = min([end, *(e for e in ends.get(c.router, []) if e - ttl >= start)])
            if start - EARLY <= c.t <= end + LATE:
                ok = True
                break
        if not ok:
            out.append(Violation("claim without VIP", c.t,
                                 f"{c.router} claimed {c.ip} while not holding it",
                                 _indexes(around(h.applied, c.t - 5, c.t))))
    return _first_per(out)


def _first_per(violations: list[Violation], within: float = 5.0) -> list[Violation]:
    """One violation per router and stretch of ``within`` s (a burst of frames is one)."""
    out: list[Violation] = []
    for v in sorted(violations, key=lambda v: v.t):
        if not any(o.detail.split()[0] == v.detail.split()[0] and v.t - o.t < within
                   for o in out):
            out.append(v)
    return out


def check_late_claims(h: History, ttl: float = TTL) -> list[Violation]:
    """Claims from a router whose agent was frozen for longer than the lease TTL: it was
    certainly unlicensed (its guardian or fence must have silenced it)."""
    out = []
    for a in h.applied:
        if a.skipped or a.kind != "freeze-long":
            continue
        unlicensed = a.started + ttl
        late = [c for c in h.claims if c.router == a.target and unlicensed < c.t < a.healed]
        if late:
            out.append(Violation("late claim", late[0].t,
                                 f"{a.target} claimed {late[0].ip} {late[0].t - a.started:.2f}"
                                 f" s into a freeze ({len(late)} frames)", (a.step.index,)))
    return out


def check_gaps(h: History) -> list[Violation]:
    out = []
    for g in h.gaps:
        steps = around(h.applied, g.start, g.end)
        bound = allowed_gap([a.step for a in steps])
        if g.duration > bound:
            out.append(Violation("gap", g.start,
                                 f"service gap of {g.duration:.2f} s > {bound:.2f} s "
                                 f"allowed ({_names(steps)})", _indexes(steps)))
    return out


def check_connections(h: History, grace: float = CONN_GRACE) -> list[Violation]:
    out = []
    for c in h.conns:
        if c.broke is None:
            continue
        steps = around(h.applied, c.broke - grace, c.broke)
        # its real server crashed before (it lost the connection, which ends when its next
        # packet reaches the server, perhaps much later), or a fault that does not keep
        # connections hit its server shortly before
        excused = any(a.target == c.server and not a.skipped and a.started <= c.broke
                      and (a.kind in LOSES_STATE or a in steps) and
                      not KINDS[a.kind].keeps_connections for a in h.applied)
        if not excused:
            out.append(Violation("connection lost", c.broke,
                                 f"connection {c.id} to {c.server} ended ({c.state}) "
                                 f"during {_names(steps)}", _indexes(steps)))
    return out


def _names(steps: Sequence[Applied]) -> str:
    return ", ".join(f"#{a.step.index} {a.kind} {a.target}".rstrip() for a in steps) \
        or "no fault"


def _indexes(steps: Sequence[Applied]) -> tuple[int, ...]:
    return tuple(a.step.index for a in steps)


def check_agents(h: History) -> list[Violation]:
    out = [Violation("agent exited", t, f"{router}'s agent exited, nobody killed it",
                     _indexes(around(h.applied, t - 5, t)))
           for t, router in h.exits]
    out += [Violation("traceback", 0.0, f"{log}: {line}") for log, line in h.tracebacks]
    out += [Violation("stale key", t, f"{key} outlived its lease")
            for t, key in h.stale_keys]
    out += [Violation("wrong", t, what) for t, what in h.wrong]
    return out


def check_convergence(h: History) -> list[Violation]:
    if h.converged is not None:
        return []
    return [Violation("no convergence", 0.0, f"after the faults: {h.convergence}")]


CHECKS = (check_owners, check_claims_held, check_late_claims, check_gaps, check_connections,
          check_agents, check_convergence)


def check(h: History) -> list[Violation]:
    """Every violation in the history, in time order."""
    return sorted((v for c in CHECKS for v in c(h)), key=lambda v: v.t)


def suspects(violations: Sequence[Violation], applied: Sequence[Applied]) -> list[Step]:
    """The steps around the first violation: the shortest history worth replaying first."""
    if not violations:
        return []
    first = violations[0]
    wanted = set(first.steps) or {a.step.index for a in around(applied, first.t - 10,
                                                               first.t)}
    return [a.step for a in applied if a.step.index in wanted]


def shrink(steps: Sequence[Step], fails: Callable[[list[Step]], bool]) -> list[Step]:
    """A 1-minimal sub-list of ``steps`` that still ``fails`` (each replay is a campaign):
    drop one step at a time, keep it dropped if the failure stays."""
    current = list(steps)
    i = 0
    while i < len(current) and len(current) > 1:
        trial = current[:i] + current[i + 1:]
        if fails(trial):
            current = trial
        else:
            i += 1
    return current


__all__ = ["NO_GAP", "Applied", "Claim", "Conn", "Gap", "History", "Overlap", "Violation",
           "check", "service_gaps", "shrink", "suspects"]
