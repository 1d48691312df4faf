"""How one virtual service is laid out in nftables: names, ranges, targets and comments.

Per service, one DNAT rule looks the selector value (random number or address hash,
``0 <= v < MOD``) up in an interval map whose ranges are sized by weight (``mh``: an address
hash ``0 <= v < size`` in a map of one element per slot of its Maglev table), and a final
``reject`` rule carries the service's settings in its comment. Each real server is one map
element; its comment keeps what the kernel cannot (weight, forwarding method, port), and
servers without a share are parked at keys ``>= MOD`` that the selector never produces.
``layout()`` is deterministic, so ``read`` can check the kernel against it. Pure.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from agent.dataplane import maglev
from agent.dataplane.nft.sched import Hash, effective_weights, port_rewrites, selector
from agent.dataplane.table import DestKey, DestSpec, Maglev, Service, ServiceKey, ServiceSpec

MOD = 1 << 20  # range of the selector value; shares are exact to 1/MOD
SEED = 0x50495241  # same on every director: a client hashes alike after a failover
FORWARDS = ("masq", "route", "tunnel")
COMMENT_VERSION = 1
COMMENT_MAX = 127  # nft refuses longer comments (NFT_USERDATA_MAXLEN 128, with the NUL)


class NftInputError(ValueError):
    """A service or real server that this backend cannot program (bad address, port...)."""


@dataclass(frozen=True)
class Slot:
    """One map element: selector values ``lo..hi`` DNAT to ``address`` (``:port``)."""

    lo: int
    hi: int
    address: str
    port: int | None  # None: the destination port is kept
    comment: str


@dataclass(frozen=True)
class ServiceRule:
    """Everything the DNAT rule of a service encodes."""

    hash: Hash
    l4proto: str | None  # "tcp"/"udp" when the DNAT rewrites the port
    slots: tuple[Slot, ...]
    mod: int = MOD  # the selector yields 0..mod-1
    seed: int = SEED  # jhash's seed
    sport: bool = False  # jhash over the source address and port


# ---------------------------------------------------------------- names


def dispatch_map(key: ServiceKey) -> str:
    """Name of the verdict map that sends a service's packets to its chain."""
    if key.protocol == "fwmark":
        return f"fwm{key.family}"
    return f"{'svc' if key.port else 'any'}{key.family}"


def chain_name(key: ServiceKey) -> str:
    """Name of the service's own chain (deterministic, ``[a-z0-9_]`` only)."""
    if key.protocol == "fwmark":
        return f"svc{key.family}_fwm_{key.fwmark}"
    token = key.address.replace(".", "_").replace(":", "x")
    return f"svc{key.family}_{key.protocol}_{token}_{key.port}"


# ---------------------------------------------------------------- validation


_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def _canonical(address: str, family: int, what: str | Callable[[], str]) -> None:
    """``address`` is an IPv``family`` address written as nft writes it (``what``: the
    thing named in the error, or a function that makes that name)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # C: 40,000 a plan
        if socket.inet_ntop(_AF[family], socket.inet_pton(_AF[family], address)) == address:
            return
    what = what if isinstance(what, str) else what()
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise NftInputError(f"{what}: {address!r} is not an IP address") from None
    if parsed.version != family:
        raise NftInputError(f"{what}: {address} is not an IPv{family} address")
    if str(parsed) != address:
        raise NftInputError(f"{what}: write {address!r} as {str(parsed)!r}")


def check_service(key: ServiceKey, service: Service) -> None:
    """Raise :class:`NftInputError` with a clear message if ``key``/``service`` can't be set."""
    if key.family not in (4, 6):
        raise NftInputError(f"{key}: family must be 4 or 6")
    if key.protocol == "fwmark":
        if not 0 < key.fwmark < 1 << 32:
            raise NftInputError(f"{key}: fwmark must be 1..4294967295")
    elif key.protocol in ("tcp", "udp"):
        _canonical(key.address, key.family, str(key))
        if not 0 <= key.port <= 65535:
            raise NftInputError(f"{key}: port must be 0..65535")
    else:
        raise NftInputError(f"{key}: protocol must be tcp, udp or fwmark")
    if not re.fullmatch(r"[a-z0-9_-]{1,16}", service.spec.scheduler):
        raise NftInputError(f"{key}: scheduler {service.spec.scheduler!r} is not a name")
    if not 0 <= service.spec.persistent < 1 << 31:
        raise NftInputError(f"{key}: persistent must be 0..2147483647 seconds")
    if not re.fullmatch(r"[0-9a-fA-F.:/]{1,45}", service.spec.netmask):
        raise NftInputError(f"{key}: netmask {service.spec.netmask!r} is not a mask")
    for flag in service.spec.flags:
        if not re.fullmatch(r"[a-z0-9-]{1,16}", flag):
            raise NftInputError(f"{key}: scheduler flag {flag!r} is not a name")
    for dkey, dspec in service.dests.items():
        check_dest(key, dkey, dspec)
    params = service.spec.maglev
    if params is not None:
        try:
            maglev.check_seed(params.seed)
            if params.size not in maglev.SIZES:
                raise ValueError(f"Maglev table size {params.size} is not one of "
                                 f"{', '.join(map(str, maglev.SIZES))}")
        except ValueError as exc:
            raise NftInputError(f"{key}: {exc}") from None
        for dkey, weight in params.base:
            check_dest(key, dkey, DestSpec(weight))
    if len(spec_comment(service.spec)) > COMMENT_MAX:
        raise NftInputError(f"{key}: settings too long for an nftables comment")


def check_dest(key: ServiceKey, dkey: DestKey, dspec: DestSpec) -> None:
    """Raise :class:`NftInputError` if real server ``dkey`` can't be set on ``key``."""
    _canonical(dkey.address, key.family, lambda: f"{key} real server {dkey.address}:{dkey.port}")
    if 0 <= dkey.port <= 65535 and 0 <= dspec.weight < 1 << 31 and dspec.forward in FORWARDS:
        return
    what = f"{key} real server {dkey.address}:{dkey.port}"
    if not 0 <= dkey.port <= 65535:
        raise NftInputError(f"{what}: port must be 0..65535")
    if not 0 <= dspec.weight < 1 << 31:
        raise NftInputError(f"{what}: weight must be 0..2147483647")
    if dspec.forward not in FORWARDS:
        raise NftInputError(f"{what}: forward must be one of {', '.join(FORWARDS)}")


# ---------------------------------------------------------------- shares


def split(weights: list[int], units: int = MOD) -> list[int]:
    """Split ``units`` in proportion to ``weights`` (largest remainder, exact integers).

    Each share is within 1 unit of its exact value, except that a positive weight too small
    to earn a unit still gets one, taken from the largest share.
    """
    positive = [i for i, w in enumerate(weights) if w > 0]
    result = [0] * len(weights)
    if not positive:
        return result
    total = sum(weights[i] for i in positive)
    remainders = []
    for i in positive:
        result[i], r = divmod(weights[i] * units, total)
        remainders.append((-r, i))
    for _, i in sorted(remainders)[: units - sum(result)]:
        result[i] += 1
    for i in positive:
        if result[i] == 0:
            result[i] = 1
            result[max(positive, key=lambda j: result[j])] -= 1
    return result


# ---------------------------------------------------------------- comments


def _compact(data: Mapping) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def spec_comment(spec: ServiceSpec) -> str:
    """Comment of the service's reject rule: the ServiceSpec as compact JSON.

    Scheduler flags ("f") and the Maglev table size ("t") and seed ("x") only when set; the
    Maglev base is in the map's element comments ("b")."""
    data: dict[str, object] = {
        "v": COMMENT_VERSION, "s": spec.scheduler, "p": spec.persistent, "m": spec.netmask}
    if spec.flags:
        data["f"] = ",".join(sorted(spec.flags))
    if spec.maglev is not None:
        data["t"], data["x"] = spec.maglev.size, spec.maglev.seed
    return _compact(data)


def spec_from_comment(text: str | None) -> ServiceSpec:
    """Inverse of :func:`spec_comment` (a Maglev base left empty); ``ValueError`` for
    anything else."""
    data = json.loads(text or "")
    if not isinstance(data, dict) or data.get("v") != COMMENT_VERSION:
        raise ValueError(f"not a service comment: {text!r}")
    scheduler, persistent, netmask = data["s"], data["p"], data["m"]
    flags, size, seed = data.get("f", ""), data.get("t"), data.get("x")
    if not (isinstance(scheduler, str) and isinstance(netmask, str) and isinstance(flags, str)):
        raise ValueError(f"bad service comment: {text!r}")
    if not isinstance(persistent, int) or persistent < 0:
        raise ValueError(f"bad service comment: {text!r}")
    table = None
    if size is not None or seed is not None:
        if not (type(size) is int and type(seed) is int):
            raise ValueError(f"bad service comment: {text!r}")
        table = Maglev(size, seed)
    return ServiceSpec(scheduler=scheduler, persistent=persistent, netmask=netmask,
                       flags=frozenset(flags.split(",")) if flags else frozenset(),
                       maglev=table)


def _target_port(key: ServiceKey, dkey: DestKey) -> int | None:
    return (dkey.port or key.port) if port_rewrites(key) else None


def dest_comment(key: ServiceKey, dkey: DestKey, dspec: DestSpec | None,
                 base: int | None = None) -> str:
    """Element comment: weight, and forward/port only where the element can't show them;
    for a Maglev table also the configured weight ("b", with no "w" for a configured real
    server that is not programmed)."""
    port = dkey.port if (_target_port(key, dkey) or 0) != dkey.port else None
    if dspec is None:
        return _dest_text(None, "masq", port, base)
    return _dest_text(dspec.weight, dspec.forward, port, base)


@functools.lru_cache(maxsize=4096)
def _dest_text(weight: int | None, forward: str, port: int | None, base: int | None) -> str:
    data: dict[str, object] = {}
    if weight is not None:
        data["w"] = weight
    if base is not None:
        data["b"] = base
    if forward != "masq":
        data["f"] = forward
    if port is not None:
        data["p"] = port
    return _compact(data)


def dest_from_slot(slot: Slot) -> tuple[DestKey, DestSpec]:
    """Recover a real server from its map element; ``ValueError`` for junk."""
    dkey, dspec, _ = element_from_slot(slot)
    if dspec is None:
        raise ValueError(f"bad element comment {slot.comment!r}")
    return dkey, dspec


def element_from_slot(slot: Slot) -> tuple[DestKey, DestSpec | None, int | None]:
    """(real server, its spec if programmed, its configured weight if given) of an element
    with a comment; ``ValueError`` for junk."""
    weight, forward, port, base = _parse_dest_text(slot.comment)
    port = (slot.port or 0) if port is None else port
    dspec = None if weight is None else DestSpec(weight=weight, forward=forward)
    return DestKey(slot.address, port), dspec, base


@functools.lru_cache(maxsize=4096)
def _parse_dest_text(text: str) -> tuple[int | None, str, int | None, int | None]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"bad element comment {text!r}")
    weight, forward, port, base = data.get("w"), data.get("f", "masq"), data.get("p"), \
        data.get("b")
    for value in (weight, base):
        if value is not None and (type(value) is not int or value < 0):
            raise ValueError(f"bad element comment {text!r}")
    if (weight is None and base is None) or forward not in FORWARDS:
        raise ValueError(f"bad element comment {text!r}")
    if port is not None and (not isinstance(port, int) or not 0 <= port <= 65535):
        raise ValueError(f"bad element comment {text!r}")
    return weight, forward, port, base


# ---------------------------------------------------------------- the rule


def layout(key: ServiceKey, service: Service) -> ServiceRule | None:
    """The DNAT rule for ``service`` (None when it has no real servers at all)."""
    sel = selector(service.spec)
    if sel.maglev:
        params = maglev_inputs(service)
        if not service.dests and not params.base:
            return None
        l4proto = key.protocol if port_rewrites(key) else None
        return _maglev_rule(key, params, tuple(sorted(service.dests.items())), l4proto,
                            sel.sport)
    if not service.dests:
        return None
    order = sorted(service.dests)
    eff = effective_weights(service.dests, sel.shares)
    units = split([eff[d] for d in order])
    slots, lo = [], 0
    for index, (dkey, share) in enumerate(zip(order, units, strict=True)):
        dspec = service.dests[dkey]
        comment = dest_comment(key, dkey, dspec)
        port = _target_port(key, dkey)
        if share:
            slots.append(Slot(lo, lo + share - 1, dkey.address, port, comment))
            lo += share
        else:  # parked: kept in the kernel, never selected
            slots.append(Slot(MOD + index, MOD + index, dkey.address, port, comment))
    l4proto = key.protocol if port_rewrites(key) else None
    return ServiceRule(sel.hash, l4proto, tuple(sorted(slots, key=lambda s: s.lo)))


def service_from_rule(spec: ServiceSpec, rule: ServiceRule | None) -> Service:
    """The Service a rule describes (inverse of :func:`layout` given the spec; the spec's
    Maglev base is completed from the elements)."""
    dests: dict[DestKey, DestSpec] = {}
    base: list[tuple[DestKey, int]] = []
    for slot in rule.slots if rule else ():
        if not slot.comment:
            continue  # one comment per real server in a Maglev table
        dkey, dspec, weight = element_from_slot(slot)
        if dspec is not None:
            dests[dkey] = dspec
        if weight is not None:
            base.append((dkey, weight))
    if spec.maglev is not None:
        spec = replace(spec, maglev=replace(spec.maglev, base=tuple(sorted(base))))
    elif base:
        raise ValueError("configured weights in a service that has no Maglev table")
    return Service(spec=spec, dests=dests)


# ---------------------------------------------------------------- Maglev (mh)


def maglev_inputs(service: Service) -> Maglev:
    """An mh service's Maglev inputs: its own (the desired state always gives them), else
    a table sized for its real servers with the constant seed and no base."""
    if service.spec.maglev is not None:
        return service.spec.maglev
    return Maglev(maglev.table_size(len(service.dests)), SEED)


@functools.lru_cache(maxsize=64)
def _maglev_rule(key: ServiceKey, params: Maglev, dests: tuple[tuple[DestKey, DestSpec], ...],
                 l4proto: str | None, sport: bool) -> ServiceRule:
    """The DNAT rule of an mh service: one element per slot of its Maglev table (slot ->
    real server). The first slot of each real server carries its comment; a real server
    with no slot (weight 0), or configured but not programmed (down: only its configured
    weight is kept), is parked at a key >= the table size. Cached: a read checks the kernel
    against it."""
    live, base = dict(dests), dict(params.base)
    servers = sorted(live.keys() | base.keys())
    ident = {d: f"{d.address}/{d.port}" for d in servers}
    back = {name: d for d, name in ident.items()}
    table = maglev.build({ident[d]: w for d, w in base.items()},
                         {ident[d]: s.weight for d, s in live.items()}, params.size, params.seed)
    slots, commented = [], set()
    for value, name in enumerate(table):
        d = back[name]
        comment = ""
        if d not in commented:
            commented.add(d)
            comment = dest_comment(key, d, live.get(d), base.get(d))
        slots.append(Slot(value, value, d.address, _target_port(key, d), comment))
    for index, d in enumerate(servers):
        if d not in commented:
            comment = dest_comment(key, d, live.get(d), base.get(d))
            value = params.size + index
            slots.append(Slot(value, value, d.address, _target_port(key, d), comment))
    return ServiceRule("saddr", l4proto, tuple(slots), params.size, params.seed, sport)
