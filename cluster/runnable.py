"""Whether a configuration can run: the one decision, for lvsctl, the agent and the etcd watch.

:func:`run_problems` is :func:`~cluster.config_checks.check` (what makes an lvs.cf
consistent) plus what only running it needs, i.e. everything a router would otherwise refuse
or silently skip when it adopts the config: a device for every VIP, at least one router,
heartbeat addresses every router can use, health checks that can be built. Pure; problems
carry model paths, which :func:`cluster.lvscf.cannot_run` turns into ``FILE:LINE: message``.

What depends on the router itself (``--node`` naming no router, the cluster name, the
kernel) stays in the agent (``agent/topology.py``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from ipaddress import IPv4Network

from .config_checks import check
from .model import AddrDev, IPAddress, LvsConfig, Path, Problem, Virtual


def run_problems(cfg: LvsConfig) -> list[Problem]:
    """Every reason ``cfg`` cannot run on its routers; empty when it can."""
    return check(cfg) + _routers(cfg) + _vips(cfg) + _checks(cfg)


# ---- routers and their heartbeat addresses -------------------------------------------------

def _router_addresses(cfg: LvsConfig) -> list[tuple[str, Path, str, IPAddress]]:
    """(router name, model path, field, address) of every heartbeat address of every router."""
    out: list[tuple[str, Path, str, IPAddress]] = []
    if cfg.routers:
        for i, r in enumerate(cfg.routers):
            out.append((r.name, ("routers", i, "address"), "address", r.address))
            if r.private is not None:
                out.append((r.name, ("routers", i, "private"), "private", r.private))
        return out
    for name in ("primary", "backup"):
        address, private = getattr(cfg, name), getattr(cfg, f"{name}_private")
        if address is not None:
            out.append((name, (name,), "address", address))
            if private is not None:
                out.append((name, (f"{name}_private",), "private", private))
    return out


def _routers(cfg: LvsConfig) -> list[Problem]:
    if not cfg.effective_routers():
        return [Problem((), "no router can run this config: add router blocks "
                            "(or primary = ADDRESS)")]
    out: list[Problem] = []
    addresses = _router_addresses(cfg)
    seen: dict[IPAddress, tuple[str, Path, str]] = {}
    for name, path, field, ip in addresses:
        if field == "private" and (ip.is_unspecified or ip.is_multicast):
            out.append(Problem(path, f"router '{name}': private {ip} is not a usable host "
                                     "address"))
        elif ip.version == 6 and ip.is_link_local:
            out.append(Problem(path, f"router '{name}': {field} {ip} is IPv6 link-local "
                                     "(needs a scope): use another address for heartbeats"))
        first = seen.setdefault(ip, (name, path, field))
        # The same field of two router blocks, and primary = backup, are check()'s findings.
        found = first[2] == field and first[0] != name and (bool(cfg.routers) or field == "address")
        if first[1] != path and not found:
            out.append(Problem(path, f"router '{name}': {field} {ip} is already router "
                                     f"'{first[0]}''s {first[2]}", first[1]))
    families: dict[str, set[int]] = {}
    for name, _, _, ip in addresses:
        families.setdefault(name, set()).add(ip.version)
    for name, path, field, ip in addresses:
        deaf = sorted(other for other, have in families.items()
                      if other != name and ip.version not in have)
        if deaf:
            out.append(Problem(path, f"router '{name}': {field} {ip} is IPv{ip.version}, but "
                                     f"router '{deaf[0]}' has no IPv{ip.version} address to "
                                     "exchange heartbeats with it"))
    return out


# ---- the addresses the active router holds -------------------------------------------------

def _held(cfg: LvsConfig) -> Iterator[tuple[Path, str, AddrDev, object]]:
    """(path, what, address, netmask) of every address the active router adds.

    The same set as the agent's ``topology.vips_of``: the VIPs of active virtuals and, with
    ``network = nat``, the nat_router; none for ``service = fos``.
    """
    if cfg.service != "lvs":
        return
    for i, v in enumerate(cfg.virtuals):
        if v.active:
            yield ("virtuals", i), f"virtual '{v.name}'", v.address, v.vip_nmask
    if cfg.nat_router is not None and cfg.network == "nat":
        yield (), "nat_router", cfg.nat_router, cfg.nat_nmask


def _vips(cfg: LvsConfig) -> list[Problem]:
    out: list[Problem] = []
    first: dict[IPAddress, tuple[Path, str, tuple[object, ...]]] = {}
    for base, what, addr, nmask in _held(cfg):
        field = "address" if base else "nat_router"
        mask_field = "vip_nmask" if base else "nat_nmask"
        path = (*base, field)
        ip = addr.ip
        if addr.device is None:
            example = "eth0:1" if ip.version == 4 else "eth0"
            out.append(Problem(path, f"{what}: address {ip} needs a device, e.g. "
                                     f"'{field} = {ip} {example}'"))
        if ip.is_loopback:
            out.append(Problem(path, f"{what}: {ip} is a loopback address; it cannot float "
                                     "between routers"))
        prefix = 32 if ip.version == 6 or nmask is None else IPv4Network(
            f"0.0.0.0/{nmask}").prefixlen
        if prefix == 0:
            out.append(Problem((*base, mask_field), f"{what}: {mask_field} {nmask} leaves no "
                                                    "network for the address"))
        if addr.device is None:
            continue
        shape = (addr.device, prefix)
        earlier = first.setdefault(ip, (path, what, shape))
        if earlier[2] != shape:
            out.append(Problem(path, f"{what} gives {ip} as '{addr}' with {mask_field} "
                                     f"{nmask or 'unset'}, but {earlier[1]} gives it "
                                     "differently: one address, one device and netmask",
                               earlier[0]))
    return out


# ---- health checks ---------------------------------------------------------------------------

def _checks(cfg: LvsConfig) -> list[Problem]:
    """What nanny needs to build a check for the real servers of every active virtual."""
    out: list[Problem] = []
    if cfg.service != "lvs":
        return out
    for i, v in enumerate(cfg.virtuals):
        if v.active:
            out += _check_of(("virtuals", i), v)
    return out


def _check_of(base: Path, v: Virtual) -> list[Problem]:
    out: list[Problem] = []
    what = f"virtual '{v.name}'"
    if v.expect == "":
        out.append(Problem((*base, "expect"), f"{what}: expect is empty: remove it, or give "
                                              "the text the reply must start with"))
    elif v.expect is not None and v.use_regex:
        try:
            re.compile(v.expect.encode("utf-8"))
        except re.error as exc:
            out.append(Problem((*base, "expect"), f"{what}: expect is not a regular "
                                                  f"expression (use_regex = 1): {exc}"))
    programs = {None: ("send_program", v.send_program),
                "external": ("check_program", v.check_program)}
    field, text = programs.get(v.check, ("", None))
    if text:  # an empty send_program is ignored; check() requires check_program
        try:
            argv, why = shlex.split(text), "names no program"
        except ValueError as exc:
            argv, why = None, f"cannot be split into a command line ({exc})"
        if argv is None or (argv and not argv[0]) or (field == "check_program" and not argv):
            out.append(Problem((*base, field), f"{what}: {field} {why}"))
    if v.check in ("http", "https"):
        path = v.check_path
        if path is not None and (not path.startswith("/") or re.search(r"\s", path)):
            out.append(Problem((*base, "check_path"), f"{what}: check_path must start with "
                                                      f"'/' and hold no blanks: {path!r}"))
        if v.check_host is not None and (not v.check_host or re.search(r"\s", v.check_host)):
            out.append(Problem((*base, "check_host"), f"{what}: check_host must be one word: "
                                                      f"{v.check_host!r}"))
        for low, _, high in (r.partition("-") for r in (v.check_status or "").split(",")):
            if high and int(low) > int(high):
                out.append(Problem((*base, "check_status"), f"{what}: check_status range "
                                                            f"{low}-{high} runs backwards"))
    return out
