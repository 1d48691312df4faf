"""How one virtual service is laid out in nftables: names, ranges, targets and comments.

Per service, one DNAT rule looks the selector value (random number or address hash,
``0 <= v < MOD``) up in an interval map whose ranges are sized by weight, and a final
``reject`` rule carries the service's settings in its comment. Each real server is one map
element; its comment keeps what the kernel cannot (weight, forwarding method, port), and
servers without a share are parked at keys ``>= MOD`` that the selector never produces.
``layout()`` is deterministic, so ``read`` can check the kernel against it. Pure.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from agent.dataplane.nft.sched import Hash, effective_weights, port_rewrites, selector
from agent.dataplane.table import DestKey, DestSpec, Service, ServiceKey, ServiceSpec

MOD = 1 << 20  # range of the selector value; shares are exact to 1/MOD
SEED = 0x50495241  # same on every director: a client hashes alike after a failover
FORWARDS = ("masq", "route", "tunnel")
COMMENT_VERSION = 1


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


def _canonical(address: str, family: int, what: str) -> None:
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
    for dkey, dspec in service.dests.items():
        check_dest(key, dkey, dspec)


def check_dest(key: ServiceKey, dkey: DestKey, dspec: DestSpec) -> None:
    """Raise :class:`NftInputError` if real server ``dkey`` can't be set on ``key``."""
    what = f"{key} real server {dkey.address}:{dkey.port}"
    _canonical(dkey.address, key.family, what)
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
    """Comment of the service's reject rule: the ServiceSpec as compact JSON."""
    return _compact(
        {"v": COMMENT_VERSION, "s": spec.scheduler, "p": spec.persistent, "m": spec.netmask}
    )


def spec_from_comment(text: str | None) -> ServiceSpec:
    """Inverse of :func:`spec_comment`; ``ValueError`` for anything else."""
    data = json.loads(text or "")
    if not isinstance(data, dict) or data.get("v") != COMMENT_VERSION:
        raise ValueError(f"not a service comment: {text!r}")
    scheduler, persistent, netmask = data["s"], data["p"], data["m"]
    if not (isinstance(scheduler, str) and isinstance(netmask, str)):
        raise ValueError(f"bad service comment: {text!r}")
    if not isinstance(persistent, int) or persistent < 0:
        raise ValueError(f"bad service comment: {text!r}")
    return ServiceSpec(scheduler=scheduler, persistent=persistent, netmask=netmask)


def _target_port(key: ServiceKey, dkey: DestKey) -> int | None:
    return (dkey.port or key.port) if port_rewrites(key) else None


def dest_comment(key: ServiceKey, dkey: DestKey, dspec: DestSpec) -> str:
    """Element comment: weight, and forward/port only where the element can't show them."""
    port = dkey.port if (_target_port(key, dkey) or 0) != dkey.port else None
    return _dest_text(dspec.weight, dspec.forward, port)


@functools.lru_cache(maxsize=4096)
def _dest_text(weight: int, forward: str, port: int | None) -> str:
    data: dict[str, object] = {"w": weight}
    if forward != "masq":
        data["f"] = forward
    if port is not None:
        data["p"] = port
    return _compact(data)


def dest_from_slot(slot: Slot) -> tuple[DestKey, DestSpec]:
    """Recover a real server from its map element; ``ValueError`` for junk."""
    weight, forward, port = _parse_dest_text(slot.comment)
    port = (slot.port or 0) if port is None else port
    return DestKey(slot.address, port), DestSpec(weight=weight, forward=forward)


@functools.lru_cache(maxsize=4096)
def _parse_dest_text(text: str) -> tuple[int, str, int | None]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"bad element comment {text!r}")
    weight, forward, port = data.get("w"), data.get("f", "masq"), data.get("p")
    if not isinstance(weight, int) or weight < 0 or forward not in FORWARDS:
        raise ValueError(f"bad element comment {text!r}")
    if port is not None and (not isinstance(port, int) or not 0 <= port <= 65535):
        raise ValueError(f"bad element comment {text!r}")
    return weight, forward, port


# ---------------------------------------------------------------- the rule


def layout(key: ServiceKey, service: Service) -> ServiceRule | None:
    """The DNAT rule for ``service`` (None when it has no real servers at all)."""
    if not service.dests:
        return None
    sel = selector(service.spec)
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
    """The Service a rule describes (inverse of :func:`layout` given the spec)."""
    dests = dict(dest_from_slot(slot) for slot in (rule.slots if rule else ()))
    return Service(spec=spec, dests=dests)
