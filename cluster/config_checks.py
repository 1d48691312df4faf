"""Cross-field rules of a configuration that pydantic cannot see (pure).

`check(cfg)` returns every problem with the model path it concerns; the lvs.cf reader maps
paths to lines, the etcd loader prints them dotted.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import Any

from .model import SCHEDULER_FLAGS, AddrDev, IPAddress, LvsConfig, Path, Problem, Virtual


def check(cfg: LvsConfig) -> list[Problem]:
    """Cross-field rules pydantic cannot see; an empty list means the config is usable."""
    out = _check_globals(cfg)
    for key in ("routers", "virtuals", "failovers"):
        out += _duplicates(getattr(cfg, key), (key,), lambda b, k=key[:-1]: (
            "name", b.name, f"duplicate {k} name '{b.name}'"))
    for i, v in enumerate(cfg.virtuals):
        out += _duplicates(v.servers, ("virtuals", i, "servers"), lambda s: (
            "name", s.name, f"duplicate server name '{s.name}'"))
        out += _check_virtual(cfg, ("virtuals", i), v)
    for i, f in enumerate(cfg.failovers):
        out += _check_vip(("failovers", i), f.address, f.vip_nmask)
    out += _duplicates(cfg.virtuals, ("virtuals",), _service)
    for field in ("address", "private"):
        out += _duplicates(cfg.routers, ("routers",), lambda r, f=field: (
            f, getattr(r, f), f"router '{r.name}' has the same {f} address {getattr(r, f)}"))
    for i, r in enumerate(cfg.routers):
        out += _host(("routers", i, "address"), r.address)
    return out


def _duplicates(blocks: Sequence[Any], base: Path, key: Any) -> list[Problem]:
    """A problem for each block whose key(block) = (field, value, message) repeats a value."""
    seen: dict[Any, int] = {}
    out: list[Problem] = []
    for i, block in enumerate(blocks):
        field, value, message = key(block)
        if value is not None and value in seen:
            out.append(Problem((*base, i, field), message, (*base, seen[value], field)))
        elif value is not None:
            seen[value] = i
    return out


def _service(v: Virtual) -> tuple[str, Any, str]:
    ip = f"[{v.address.ip}]" if v.address.ip.version == 6 else str(v.address.ip)
    if v.fwmark is not None:
        what, field, value = f"fwmark {v.fwmark}", "fwmark", (v.address.ip.version, v.fwmark)
    else:
        what, field, value = f"{v.protocol} {ip}:{v.port}", "address", (v.protocol, ip, v.port)
    return field, value, f"virtual '{v.name}' uses the same service ({what}) as an earlier one"


def _host(path: Path, ip: IPAddress | None) -> list[Problem]:
    if ip is not None and (ip.is_unspecified or ip.is_multicast):
        return [Problem(path, f"'{path[-1]}' {ip} is not a usable host address")]
    return []


def _check_vip(base: Path, addr: AddrDev, nmask: IPv4Address | None) -> list[Problem]:
    out = _host((*base, "address"), addr.ip)
    if nmask is not None and addr.ip.version == 6:
        out.append(Problem((*base, "vip_nmask"), "vip_nmask is an IPv4 netmask; address is IPv6"))
    return out


def _check_virtual(cfg: LvsConfig, base: Path, v: Virtual) -> list[Problem]:
    out = _check_vip(base, v.address, v.vip_nmask)
    vip = v.address.ip
    if v.check == "external" and not v.check_program:
        out.append(Problem((*base, "check"), "check = external needs check_program"))
    for flag in sorted(v.sched_flags):
        if SCHEDULER_FLAGS[flag] != v.scheduler:
            out.append(Problem((*base, "scheduler_flags"), f"scheduler flag {flag} needs "
                                                           f"scheduler = {SCHEDULER_FLAGS[flag]}"))
    if v.pmask is not None and v.persistent == 0:
        out.append(Problem((*base, "pmask"), "pmask needs persistent > 0"))
    if v.pmask is not None and vip.version == 6:
        out.append(Problem((*base, "pmask"), "pmask is an IPv4 netmask; address is IPv6"))
    if v.sorry_server is not None:
        out += _host((*base, "sorry_server"), v.sorry_server)
        if v.sorry_server == vip:
            out.append(Problem((*base, "sorry_server"), "sorry_server is the virtual address"))
    for j, s in enumerate(v.servers):
        path = (*base, "servers", j, "address")
        out += _host(path, s.address)
        if s.address == vip:
            out.append(Problem(path, "real server address is the virtual address"))
        elif s.address.version != vip.version and cfg.network != "tunnel":
            out.append(Problem(path, f"real server is IPv{s.address.version} but the virtual "
                                     f"is IPv{vip.version} (only network = tunnel can mix)"))
    return out


def _check_globals(cfg: LvsConfig) -> list[Problem]:
    from .timing import timing_from  # the timing module needs this one

    out = _host(("primary",), cfg.primary) + _host(("backup",), cfg.backup)
    field = ("safety_margin" if cfg.safety_margin is not None
             else "deadtime" if cfg.deadtime is not None else "keepalive")
    out += [Problem((field,), f"timing: {p}") for p in timing_from(cfg).problems()]
    if cfg.nat_router is not None:
        out += _host(("nat_router",), cfg.nat_router.ip)
    if cfg.backup_active and cfg.backup is None:
        out.append(Problem(("backup_active",), "backup_active = 1 but no backup address is set"))
    if cfg.backup is not None and cfg.backup == cfg.primary:
        out.append(Problem(("backup",), "backup has the same address as primary"))
    if cfg.nat_nmask is not None and cfg.nat_router is None:
        out.append(Problem(("nat_nmask",), "nat_nmask is set but nat_router is not"))
    if cfg.nat_nmask is not None and cfg.nat_router and cfg.nat_router.ip.version == 6:
        out.append(Problem(("nat_nmask",), "nat_nmask is an IPv4 netmask; nat_router is IPv6"))
    legacy = [f for f in ("primary", "primary_private", "backup", "backup_private")
              if getattr(cfg, f) is not None] + (["backup_active"] if cfg.backup_active else [])
    if cfg.routers and legacy:
        out.append(Problem(("routers", 0), "router blocks replace the two-router globals; "
                                           f"remove {', '.join(legacy)}"))
    return out
