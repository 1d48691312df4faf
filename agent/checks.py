"""From the config to nanny's check targets: one (CheckSpec, StateSpec) per real server (pure)."""

from __future__ import annotations

import logging
import shlex
from dataclasses import replace

from cluster.health import ServerKey
from cluster.model import LvsConfig, Server, Virtual

from .nanny import CheckSpec, StateSpec, piranha_check

log = logging.getLogger(__name__)

LOAD_MONITORS = {"uptime": ("{rsh}", "%h", "uptime"), "rup": ("rup", "%h"),
                 "ruptime": ("ruptime", "%h")}


def _argv(text: str | None) -> tuple[str, ...] | None:
    return tuple(shlex.split(text)) if text else None


def check_spec(cfg: LvsConfig, v: Virtual, s: Server) -> CheckSpec:
    """How to check real server ``s`` of ``v`` (ValueError if it cannot be)."""
    port = v.check_port or v.effective_port(s)
    send = v.send.encode("latin-1", "replace") if v.send is not None else None
    load = None
    if v.load_monitor and v.load_monitor != "none":
        load = tuple(a.replace("{rsh}", cfg.rsh_command) for a in LOAD_MONITORS[v.load_monitor])
    if v.check is None:
        spec = piranha_check(str(s.address), port, v.timeout, protocol=v.protocol, send=send,
                             expect=v.expect, use_regex=v.use_regex,
                             send_program=_argv(v.send_program), weight=s.weight,
                             load_monitor=load)
    else:
        spec = CheckSpec(
            kind=v.check, host=str(s.address), port=port, timeout=v.timeout, weight=s.weight,
            send=send, expect=v.expect, use_regex=v.use_regex,
            argv=(_argv(v.check_program) or ()) if v.check == "external" else (),
            http_path=v.check_path or "/",
            http_host=v.check_host, http_status=v.check_status or "200-299",
            http_body=v.check_body, dns_name=v.dns_name or ".", dns_type=v.dns_type or "SOA",
            load_monitor=load)
    return replace(spec, interval=v.interval) if v.interval is not None else spec


Targets = dict[ServerKey, tuple[CheckSpec, StateSpec]]


def targets(cfg: LvsConfig) -> Targets:
    """Every real server that is programmed (active virtual, active server) and its check."""
    out: Targets = {}
    if cfg.service != "lvs":
        return out
    for v in cfg.virtuals:
        if not v.active:
            continue
        state = StateSpec(failures_to_down=v.failures, reentry=v.reentry,
                          quiesce=v.quiesce_server)
        for s in v.servers:
            if not s.active:
                continue
            try:
                out[ServerKey(v.name, s.name)] = (check_spec(cfg, v, s), state)
            except ValueError as exc:  # SpecError, or a command line shlex cannot split
                log.error("virtual %s server %s cannot be checked: %s", v.name, s.name, exc)
    return out
