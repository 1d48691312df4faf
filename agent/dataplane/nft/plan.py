"""Turn ops into one nftables transaction, and compute the state it leaves. Pure.

A service that exists and changes gets a new generation inserted at the head of its chain
(additions only: fast to commit). A new, reset or broken service has its chain rewritten.
Nothing outside the touched services' chains and dispatch elements is written, except the
base chains when ``read`` found them broken or missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from agent.dataplane.nft import guard, traffic
from agent.dataplane.nft import rules as rules
from agent.dataplane.nft.layout import NftInputError, chain_name, check_service
from agent.dataplane.nft.read import KernelState
from agent.dataplane.table import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    EditDest,
    EditService,
    Op,
    Service,
    ServiceKey,
)


@dataclass(frozen=True)
class Plan:
    """Commands of one transaction, the state after it, and the services it wrote."""

    commands: list[rules.Json]
    after: KernelState
    written: dict[ServiceKey, Service]  # services (re)programmed by this transaction
    deleted: frozenset[ServiceKey] = frozenset()  # services it deletes


def _touch(state: KernelState, ops: Sequence[Op]) -> tuple[dict, dict[ServiceKey, str]]:
    """Services after ``ops`` and how each touched one changed: reset, edit or delete."""
    services = dict(state.services)
    how: dict[ServiceKey, str] = {}
    dests: dict[ServiceKey, dict] = {}  # real servers being changed, one copy per service

    def settle(key: ServiceKey) -> None:
        if key in dests:
            services[key] = replace(services[key], dests=dests.pop(key))

    for op in ops:
        if isinstance(op, AddService):
            dests.pop(op.key, None)
            services[op.key] = Service(op.spec, {})
            how[op.key] = "reset"
        elif isinstance(op, EditService):
            settle(op.key)
            old = services.get(op.key)
            services[op.key] = Service(op.spec, old.dests if old else {})
            how[op.key] = how.get(op.key, "edit") if old else "reset"
        elif isinstance(op, DelService):
            dests.pop(op.key, None)
            services.pop(op.key, None)
            how[op.key] = "delete"
        elif isinstance(op, AddDest | EditDest | DelDest):
            held = dests.get(op.service)
            if held is None:
                old = services.get(op.service)
                if old is None:
                    raise NftInputError(f"{op.service}: no such virtual service")
                held = dests[op.service] = dict(old.dests)
            if isinstance(op, DelDest):
                held.pop(op.key, None)
            else:
                held[op.key] = op.spec
            how.setdefault(op.service, "edit")
        else:
            raise NftInputError(f"unknown operation {op!r}")
    for key in list(dests):
        settle(key)
    return services, how


#: Operations per kernel transaction: a bigger change goes as several, each whole services.
#: The kernel holds nf_tables' commit lock while it takes a transaction in, and every other
#: nftables writer of the namespace waits: the VIP fence's licence renewals, on the agent's
#: event loop, waited 0.85 s for one transaction of 40,000 real servers.
TRANSACTION_OPS = 4096
#: The first transaction of a split change is small: the kernel starts on it while the
#: next one is planned (the backend plans each while the one before commits).
FIRST_TRANSACTION_OPS = 512


def split(ops: Sequence[Op], limit: int = TRANSACTION_OPS,
          first: int | None = None) -> list[Sequence[Op]]:
    """``ops`` in order, cut into runs of at most ``limit`` operations (the first run: at
    most ``first``), only between two services: a service's own operations stay in one
    run (alone, if more than the limit)."""
    if limit < 1 or (first is not None and first < 1):
        raise ValueError(f"limits must be >= 1, not {limit}, {first}")
    runs: list[Sequence[Op]] = []
    start = boundary = 0  # the run being built; where the newest service in it begins
    cap = limit if first is None else first
    for i in range(1, len(ops)):
        if _service(ops[i]) != _service(ops[i - 1]):
            boundary = i
        if i + 1 - start > cap and boundary > start:
            runs.append(ops[start:boundary])
            start, cap = boundary, limit
    if ops:
        runs.append(ops[start:])
    return runs


def _service(op: Op) -> ServiceKey:
    return op.service if isinstance(op, AddDest | EditDest | DelDest) else op.key


def _checked(state: KernelState, ops: Sequence[Op]) -> tuple[dict, dict[ServiceKey, str]]:
    services, how = _touch(state, ops)
    for key, change in how.items():
        if change != "delete":
            check_service(key, services[key])
    return services, how


def check(state: KernelState, ops: Sequence[Op]) -> None:
    """Raise :class:`NftInputError` if :func:`plan_apply` would refuse any of ``ops``.

    A change split into several transactions is checked whole first, so that one can be
    planned while the one before commits and an input error still writes nothing.
    """
    _checked(state, ops)


def plan_apply(state: KernelState, ops: Sequence[Op], cfg: rules.Config, *,
               checked: bool = False) -> Plan:
    """The one transaction that carries out ``ops`` on top of ``state``.

    Raises :class:`NftInputError` (before anything is written) for ops that cannot be
    programmed: unknown service, bad address, port, weight or forwarding method
    (``checked``: :func:`check` passed them already; not checked again).
    """
    services, how = _touch(state, ops) if checked else _checked(state, ops)
    cmds: list[rules.Json] = [] if state.base_ok else rules.base_commands(cfg)
    chains, stale, stray = set(state.chains), set(state.stale), set(state.stray)
    broken = set(state.broken) - how.keys()  # touched ones are rewritten or deleted
    built: list[ServiceKey] = []
    written: dict[ServiceKey, Service] = {}
    for key in sorted(how):
        name = chain_name(key)
        if how[key] == "delete":
            cmds += rules.delete_service(cfg, key)
            chains.discard(name)
            stale.discard(name)
            stray.discard(name)
            continue
        service = services[key]
        fresh = how[key] == "reset" or key not in state.services or name not in chains
        if fresh:
            cmds += rules.build_service(cfg, key, service, exists=name in chains)
            built.append(key)
            chains.add(name)
            stale.discard(name)
            stray.discard(name)
        elif service != state.services[key]:
            cmds += rules.insert_generation(cfg, key, service)
            stale.add(name)
        else:
            continue
        written[key] = service
    if built:
        cmds += rules.add_dispatch(cfg, built)
    sets, set_cmds = _sets(state, services, how, cfg)
    cmds += set_cmds
    want, counted = sets
    after = KernelState(
        services=services,
        chains=frozenset(chains),
        stale=frozenset(stale),
        stray=frozenset(stray),
        broken=frozenset(broken),
        guard=want,
        traffic=counted,
        base_ok=True,
        sets_tidy=True,
    )
    return Plan(cmds, after, written, frozenset(k for k, h in how.items() if h == "delete"))


Sets = tuple[frozenset[guard.Endpoint], frozenset[traffic.Counted]]
#: Endpoints dropped by a change that are each looked up in the other services; past this
#: many, one pass over the other services finds those still held (O(servers), not
#: O(servers x endpoints)).
HELD_LOOKUPS = 32


def _sets(state: KernelState, services: dict[ServiceKey, Service], how: dict[ServiceKey, str],
          cfg: rules.Config) -> tuple[Sets, list[rules.Json]]:
    """The reply guard and traffic sets after the touched services changed, and the
    commands that get them there.

    From the touched services alone while ``state``'s sets are known to be exact: one
    change among 40,000 real servers costs what that service holds, not a pass over all
    of them. Otherwise (a new table, drift or junk found) from every service."""
    if not (state.base_ok and state.sets_tidy and state.guard is not None
            and state.traffic is not None):
        want, counted = guard.endpoints(services), traffic.counted(services)
        cmds: list[rules.Json] = []
        if not state.base_ok or state.guard != want:
            cmds += guard.commands(cfg.table, state.guard if state.base_ok else None, want)
        if not state.base_ok or state.traffic != counted:
            cmds += traffic.commands(cfg.table, state.traffic if state.base_ok else None,
                                     counted)
        return (want, counted), cmds
    was = {key: state.services[key] for key in how if key in state.services}
    now = {key: services[key] for key in how if key in services}
    g_was, g_now = guard.endpoints(was), guard.endpoints(now)
    # An endpoint the touched services no longer hold may be another service's too: a few
    # are looked up in the others, many (a big removal) found by one pass over them.
    g_gone = g_was - g_now
    if len(g_gone) > HELD_LOOKUPS:
        g_gone -= guard.endpoints({k: v for k, v in services.items() if k not in how})
    else:
        g_gone = {e for e in g_gone if not guard.held_elsewhere(e, services, how)}
    g_new = g_now - state.guard
    # A traffic item names its own service: no other service holds it.
    t_was, t_now = traffic.counted(was), traffic.counted(now)
    t_gone, t_new = t_was - t_now, t_now - state.traffic
    want = state.guard - g_gone | g_new if g_gone or g_new else state.guard
    counted = state.traffic - t_gone | t_new if t_gone or t_new else state.traffic
    cmds = guard.delta_commands(cfg.table, g_gone, g_new) if g_gone or g_new else []
    if t_gone or t_new:
        cmds += traffic.delta_commands(cfg.table, t_gone, t_new)
    return (want, counted), cmds


def plan_compaction(state: KernelState, cfg: rules.Config) -> Plan:
    """One transaction that drops what no packet should meet any more.

    Dead generations of changed services, services ``read`` found broken and nobody has
    rewritten since (the desired state does not want them, or it would have), and chains
    nothing points at; reply guard sets that differ from the services are repaired.
    """
    by_chain = {chain_name(key): key for key in state.services}
    cmds: list[rules.Json] = []
    for name in sorted(state.stale):
        key = by_chain.get(name)
        if key is not None:
            cmds += rules.compact_service(cfg, key, state.services[key])
    cmds += [rules.delete_dispatch(cfg, key) for key in sorted(state.broken)]
    broken_chains = {chain_name(key) for key in state.broken} & state.chains
    dead = (state.stray | broken_chains) - by_chain.keys()
    for name in sorted(dead):
        cmds += rules.delete_chain(cfg, name)
    want, counted = state.guard, state.traffic
    if state.base_ok and not state.sets_tidy:  # else known to match: nothing to compute
        want, counted = guard.endpoints(state.services), traffic.counted(state.services)
        if state.guard != want:
            cmds += guard.commands(cfg.table, state.guard, want)
        if state.traffic != counted:
            cmds += traffic.commands(cfg.table, state.traffic, counted)
    after = replace(
        state,
        guard=want,
        traffic=counted,
        chains=state.chains - dead,
        stale=frozenset(),
        stray=frozenset(),
        broken=frozenset(),
        problems=(),
        sets_tidy=state.base_ok,
    )
    return Plan(cmds, after, {})
