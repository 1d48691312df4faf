"""What validates, runs: every reason a config cannot run, at its line; the agent's own
refusals are exactly these plus the per-router ones."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_lvscf_props import configs

from agent.checks import check_spec
from agent.topology import TopologyError, plan
from cluster.lvscf import cannot_run, parse, write
from cluster.model import AddrDev, LvsConfig, Router, config_from_json
from cluster.runnable import run_problems

ROUTERS = """serial_no = 3
router r1 {
    address = 10.0.0.2
}
router r2 {
    address = 10.0.0.3
}
"""  # 7 lines: what follows starts on line 8


def run_errors(text: str) -> list[str]:
    """The errors of ``text`` read as a config to run (and it reads well without running)."""
    assert parse(text, "r.cf").errors == []
    result = parse(text, "r.cf", runnable=True)
    assert (result.config is None) == bool(result.errors)
    return [str(e) for e in result.errors]


def test_a_vip_without_a_device_is_refused_at_its_line_showing_the_fix() -> None:
    text = ROUTERS + "virtual web {\n    address = 10.77.0.100\n}\n"
    assert run_errors(text) == [
        "r.cf:9: virtual 'web': address 10.77.0.100 needs a device, "
        "e.g. 'address = 10.77.0.100 eth0:1'"]
    six = ROUTERS + "virtual web {\n    address = fd00::100\n}\n"
    assert "e.g. 'address = fd00::100 eth0'" in run_errors(six)[0]
    fixed = text.replace("10.77.0.100\n", "10.77.0.100 eth0:1\n")
    assert run_errors(fixed) == []


def test_only_addresses_a_router_holds_need_a_device() -> None:
    inactive = ROUTERS + "virtual web {\n    address = 10.77.0.100\n    active = 0\n}\n"
    assert run_errors(inactive) == []
    assert run_errors(ROUTERS + "service = fos\nvirtual web {\n    address = 10.7.0.1\n}\n") == []
    direct = ROUTERS + "network = direct\nnat_router = 10.0.1.1\n"
    assert run_errors(direct) == []
    nat = ROUTERS + "network = nat\nnat_router = 10.0.1.1\n"
    assert run_errors(nat) == [
        "r.cf:9: nat_router: address 10.0.1.1 needs a device, e.g. 'nat_router = 10.0.1.1 eth0:1'"]


def test_no_router_at_all() -> None:
    assert run_errors("serial_no = 1\n") == [
        "r.cf:1: no router can run this config: add router blocks (or primary = ADDRESS)"]
    assert run_errors("serial_no = 1\nprimary = 10.0.0.2\n") == []


def test_timing_constraints_are_refused_at_their_line() -> None:
    # check() has them; they are part of the decision (and were the agent's before)
    result = parse(ROUTERS + "keepalive = 2\ndeadtime = 3\n", "r.cf", runnable=True)
    assert [str(e) for e in result.errors] == [
        "r.cf:9: timing: deadtime (3s) must be at least twice keepalive (2s)"]


@pytest.mark.parametrize(("tail", "expected"), [
    ("virtual a {\n address = 127.0.0.5 lo:1\n}\n",
     "r.cf:9: virtual 'a': 127.0.0.5 is a loopback address; it cannot float between routers"),
    ("virtual a {\n address = 10.7.0.1 eth0:1\n vip_nmask = 0.0.0.0\n}\n",
     "r.cf:10: virtual 'a': vip_nmask 0.0.0.0 leaves no network for the address"),
    ("virtual a {\n address = 10.7.0.1 eth0:1\n port = 80\n}\n"
     "virtual b {\n address = 10.7.0.1 eth1:1\n port = 443\n}\n",
     "r.cf:13: virtual 'b' gives 10.7.0.1 as '10.7.0.1 eth1:1' with vip_nmask unset, but "
     "virtual 'a' gives it differently: one address, one device and netmask "
     "(first defined at line 9)"),
    ("virtual a {\n address = 10.7.0.1 eth0:1\n expect = \"\"\n}\n",
     "r.cf:10: virtual 'a': expect is empty"),
    ("virtual a {\n address = 10.7.0.1 eth0:1\n use_regex = 1\n expect = \"HTTP(\"\n}\n",
     "r.cf:11: virtual 'a': expect is not a regular expression (use_regex = 1)"),
    ("virtual a {\n address = 10.7.0.1 eth0:1\n send_program = \"check 'x\"\n}\n",
     "r.cf:10: virtual 'a': send_program cannot be split into a command line"),
    ("virtual a {\n address = 10.7.0.1 eth0:1\n check = external\n check_program = \"''\"\n}\n",
     "r.cf:11: virtual 'a': check_program names no program"),
    ("virtual a {\n address = 10.7.0.1 eth0:1\n check = http\n check_path = index.html\n}\n",
     "r.cf:11: virtual 'a': check_path must start with '/'"),
    ("virtual a {\n address = 10.7.0.1 eth0:1\n check = http\n check_host = \"a b\"\n}\n",
     "r.cf:11: virtual 'a': check_host must be one word"),
    ("virtual a {\n address = 10.7.0.1 eth0:1\n check = http\n check_status = 299-200\n}\n",
     "r.cf:11: virtual 'a': check_status range 299-200 runs backwards"),
])
def test_each_refusal_kind_at_its_line(tail: str, expected: str) -> None:
    (error,) = run_errors(ROUTERS + tail)
    assert error.startswith(expected), error


@pytest.mark.parametrize(("routers", "expected"), [
    ("router r1 {\n address = 10.0.0.2\n private = 10.0.0.3\n}\n"
     "router r2 {\n address = 10.0.0.3\n}\n",
     "r.cf:7: router 'r2': address 10.0.0.3 is already router 'r1''s private "
     "(first defined at line 4)"),
    ("router r1 {\n address = 10.0.0.2\n private = 10.0.0.2\n}\n",
     "r.cf:4: router 'r1': private 10.0.0.2 is already router 'r1''s address "
     "(first defined at line 3)"),
    ("router r1 {\n address = 10.0.0.2\n private = 0.0.0.0\n}\n",
     "r.cf:4: router 'r1': private 0.0.0.0 is not a usable host address"),
    ("router r1 {\n address = fe80::2\n}\n",
     "r.cf:3: router 'r1': address fe80::2 is IPv6 link-local (needs a scope)"),
    ("router r1 {\n address = 10.0.0.2\n}\nrouter r2 {\n address = fd00::3\n}\n",
     "r.cf:3: router 'r1': address 10.0.0.2 is IPv4, but router 'r2' has no IPv4 address"),
    ("primary = 10.0.0.2\nprimary_private = 10.0.1.2\nbackup = 10.0.0.3\n"
     "backup_private = 10.0.1.2\n",
     "r.cf:5: router 'backup': private 10.0.1.2 is already router 'primary''s private "
     "(first defined at line 3)"),
])
def test_heartbeat_addresses_every_router_can_use(routers: str, expected: str) -> None:
    errors = run_errors("serial_no = 1\n" + routers)
    assert any(e.startswith(expected) for e in errors), errors


def test_every_problem_at_once_in_line_order() -> None:
    text = ROUTERS + ("virtual a {\n address = 10.7.0.1\n expect = \"\"\n}\n"
                      "network = nat\nnat_router = 10.0.1.1\n")
    assert [e.split(":")[1] for e in run_errors(text)] == ["9", "10", "13"]


def test_a_stored_config_gets_the_lines_of_its_source() -> None:
    text = ROUTERS + "virtual web {\n    address = 10.77.0.100\n}\n"
    cfg = parse(text, "x.cf").config
    assert cfg is not None
    (problem,) = cannot_run(cfg, source=text)
    assert str(problem).startswith("lvs.cf:9: virtual 'web': address 10.77.0.100 needs")
    # Without source (or with one that is another config): the model path, line 0.
    for source in (None, "serial_no = 1\n"):
        (problem,) = cannot_run(cfg, source=source)
        assert str(problem).startswith("lvs.cf:0: virtuals.0.address: virtual 'web': address")
    # From JSON (as etcd holds it) the same model, so the same decision.
    again = config_from_json(json.loads(json.dumps(cfg.model_dump(mode="json"))))
    assert cannot_run(again, "t.cf", source=text) == cannot_run(cfg, "t.cf", source=text)


def test_the_agent_refuses_what_validate_refuses_and_per_router_problems() -> None:
    text = ROUTERS + "virtual web {\n    address = 10.77.0.100\n}\n"
    cfg = parse(text, "x.cf").config
    assert cfg is not None
    with pytest.raises(TopologyError, match="needs a device"):
        plan(cfg, "r1", cluster="default")
    ok = parse(text.replace("10.77.0.100\n", "10.77.0.100 eth0:1\n"), "x.cf").config
    assert ok is not None
    assert plan(ok, "r1", cluster="default").vips[0].interface == "eth0"
    with pytest.raises(TopologyError, match="node 'r9' is not a router"):
        plan(ok, "r9", cluster="default")  # per router: not the config's fault
    assert cannot_run(ok) == []


# ---- the property: what the decision accepts, every router can run -------------------------

def runs_everywhere(cfg: LvsConfig) -> None:
    """Every router plans ``cfg`` and every programmed real server gets a check."""
    for r in cfg.effective_routers():
        plan(cfg, r.name, cluster="default")
    for v in cfg.virtuals if cfg.service == "lvs" else ():
        for s in v.servers if v.active else ():
            if s.active:
                check_spec(cfg, v, s)


@st.composite
def runnable_leaning(draw: Any) -> LvsConfig:
    """Generated configs with the usual fixes made (devices, a router), so most can run."""
    cfg: LvsConfig = draw(configs())
    dev = draw(st.sampled_from(["eth0", "eth0:1", "bond1:7"]))
    virtuals = tuple(v.model_copy(update={"address": AddrDev(
        ip=v.address.ip, device=v.address.device or dev)}) for v in cfg.virtuals)
    update: dict[str, Any] = {"virtuals": virtuals}
    if cfg.nat_router is not None:
        update["nat_router"] = AddrDev(ip=cfg.nat_router.ip, device=dev)
    if not cfg.effective_routers():
        update["routers"] = (Router(name="r1", address="10.9.0.1"),
                             Router(name="r2", address="10.9.0.2", private="10.9.1.2"))
    return cfg.model_copy(update=update)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.one_of(configs(), runnable_leaning()))
def test_what_the_decision_accepts_every_router_runs(cfg: LvsConfig) -> None:
    problems = run_problems(cfg)
    if not problems:
        runs_everywhere(cfg)
        # and it survives being written and read back as lvs.cf
        assert parse(write(cfg), "w.cf", runnable=True).config == cfg
