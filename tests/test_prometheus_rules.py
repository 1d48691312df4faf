"""The alert rules and the Prometheus config of deploy/prometheus are valid, and the promtool
unit tests of every alert pass (each alert has a case where it fires and one where it does
not: checked here too, so a new alert cannot ship untested)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROM = REPO / "deploy" / "prometheus"


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool missing (Debian prometheus): run the README's test command "
                    "(make test)")
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def alert_names(rules: str) -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)\s*$", rules, re.M)


def cases(tests: str) -> dict[str, set[bool]]:
    """alert name -> {True if a case expects it to fire, False if a case expects silence}."""
    found: dict[str, set[bool]] = {}
    for name, exp in re.findall(r"alertname: (\w+)\n\s*exp_alerts:(.*)\n", tests):
        found.setdefault(name, set()).add(exp.strip() != "[]")
    return found


def test_rules_are_valid() -> None:
    res = promtool("check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_prometheus_config_is_valid() -> None:
    res = promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_alert_unit_tests_pass() -> None:
    res = promtool("test", "rules", "alerts.test.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    names = alert_names((PROM / "alerts.yml").read_text())
    required = {"LvsNoActiveRouter", "LvsMultipleActiveRouters", "LvsRouterDown",
                "LvsEtcdUnreachable", "LvsFailoverFlapping", "LvsHeartbeatPeerSilent",
                "LvsBadHeartbeats", "LvsRealServerDown", "LvsVirtualServiceDown",
                "LvsConfigNotRunning", "LvsDriftRepairedRepeatedly", "LvsCheckLatencyHigh"}
    assert required <= set(names)
    found = cases((PROM / "alerts.test.yml").read_text())
    untested = {n: sorted(found.get(n, set())) for n in names if found.get(n) != {True, False}}
    assert not untested, f"alerts without a firing and a silent case: {untested}"


def test_every_alert_says_what_to_do() -> None:
    rules = (PROM / "alerts.yml").read_text()
    blocks = re.split(r"^\s*- (?=alert:|record:)", rules, flags=re.M)[1:]
    for block in blocks:
        if not block.startswith("alert:"):
            continue
        name = block.split()[1]
        assert re.search(r"severity: (critical|warning)", block), name
        assert "summary:" in block and "description:" in block, name
        assert re.search(r"\n\s*for: \d+[smh]", block) or "increase(" in block, name


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: the same tests against rules whose real-server alert looks
    at any router (not the active's verdict) do fail."""
    rules = (PROM / "alerts.yml").read_text()
    broken = rules.replace('and on (instance) lvs_role{role="active"} == 1\n          )',
                           'and on (instance) lvs_role == 1\n          )')
    assert broken != rules
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(PROM / "alerts.test.yml", tmp_path)
    res = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert res.returncode != 0
    assert "LvsRealServerDown" in res.stdout + res.stderr
