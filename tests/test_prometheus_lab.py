"""The alerts and the dashboard on a real Prometheus (the Debian binary) scraping a lab's
agents: every rule evaluates without error, a healthy cluster fires nothing, every dashboard
query returns series, and killing a real server fires LvsRealServerDown for it (and only
for it), which resolves once the server is back.

Prometheus runs in the lab's client namespace (it reaches every router's :9100) with the
deploy/prometheus/prometheus.yml scrape job pointed at the lab's routers, 1 s scrape and
evaluation, and a copy of alerts.yml whose `for:` are all 2 s."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster import lvscf
from lvslab import Lab
from lvslab.config_file import lab_lvs_cf
from lvslab.topology import Topology

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parent.parent
PROM = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "piranha-etcd.json"
API = "http://127.0.0.1:9090/api/v1"
RATE_WINDOW = "10s"  # stands for Grafana's $__rate_interval (4 scrapes at least)

# Series a two-router nftables lab cannot have; every other query must return series.
NOT_IN_THIS_LAB = {
    "lvs_real_server_active_connections": "IPVS only",
    "lvs_real_server_inactive_connections": "IPVS only",
}


def wait_for(cond: Callable[[], Any], limit: float, what: str) -> Any:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        got = cond()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out after {limit}s waiting for {what}")


def lab_prometheus_yml(targets: list[str]) -> str:
    """deploy/prometheus/prometheus.yml for the lab: its rule file, the lab's routers, 1 s."""
    text = (PROM / "prometheus.yml").read_text()
    text = re.sub(r"(scrape|evaluation)_interval: \S+", r"\1_interval: 1s", text)
    text = text.replace("scrape_timeout: 5s", "scrape_timeout: 1s")
    text = re.sub(r"targets: \[r1:9100[^\]]*\]", f"targets: [{', '.join(targets)}]", text)
    assert all(t in text for t in targets)
    return text


def short_rules() -> str:
    """alerts.yml with every `for:` cut to 2 s (a real server's death is seen in seconds),
    but 30 s for LvsRealServerHealthDisputed: the routers check a server at different
    instants, so for a check interval they disagree (the real rule waits 10 minutes)."""
    out, alert = [], ""
    for line in (PROM / "alerts.yml").read_text().splitlines(keepends=True):
        m = re.match(r"\s*- (?:alert|record): (\S+)", line)
        if m:
            alert = m.group(1)
        m = re.match(r"(\s*)for: \S+$", line)
        if m:
            wait = "30s" if alert == "LvsRealServerHealthDisputed" else "2s"
            line = f"{m.group(1)}for: {wait}\n"
        out.append(line)
    short = "".join(out)
    assert short.count("for: 2s") >= 10
    return short


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus missing (Debian prometheus): run the README's test command")
    n = os.getpid() % 50
    topo = Topology(f"pm{n}", "10.93.0.0/24", "10.93.1.0/24", routers=2, servers=2)
    tmp = tmp_path_factory.mktemp("prom")
    # checks every 2 s instead of 6: the killed server is seen down within seconds
    cfg = lvscf.parse(lab_lvs_cf(topo).replace("timeout = 6", "timeout = 2"), "lab.cf").config
    assert cfg is not None
    (tmp / "lvs.cf").write_text(lvscf.write(cfg))
    (tmp / "prometheus.yml").write_text(lab_prometheus_yml(
        [f"{topo.host(r).address('public')}:9100" for r in ("r1", "r2")]))
    (tmp / "alerts.yml").write_text(short_rules())
    with Lab(topo.prefix, topo.public, topo.private, routers=2, servers=2,
             config=tmp / "lvs.cf") as lab:
        lab.wait_served(within=30)
        log = (tmp / "prometheus.log").open("w")
        lab.popen("client", "prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                  f"--storage.tsdb.path={tmp / 'data'}", "--web.listen-address=127.0.0.1:9090",
                  stdout=log, stderr=log)
        lab.tmp = tmp  # type: ignore[attr-defined]
        wait_for(lambda: targets_up(lab) == 2, 30, "Prometheus scraping both routers")
        time.sleep(12)  # more than RATE_WINDOW of samples and a few rule evaluations
        yield lab


def api(lab: Lab, path: str, **params: str) -> Any:
    args: list[str] = []
    for k, v in params.items():
        args += ["--data-urlencode", f"{k}={v}"]
    res = lab.exec("client", "curl", "-sG", *args, f"{API}/{path}")
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    assert body["status"] == "success", body
    return body["data"]


def targets_up(lab: Lab) -> int:
    res = lab.exec("client", "curl", "-s", f"{API}/targets")
    if res.returncode != 0:
        return 0
    active = json.loads(res.stdout)["data"]["activeTargets"]
    return sum(1 for t in active if t["labels"]["job"] == "pulse" and t["health"] == "up")


def firing(lab: Lab) -> list[dict[str, str]]:
    """Labels of the alerts firing now."""
    return [a["labels"] for a in api(lab, "alerts")["alerts"] if a["state"] == "firing"]


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


def test_every_rule_evaluates_without_error(lab: Lab) -> None:
    groups = api(lab, "rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    names = re.findall(r"^\s*- (?:alert|record): (\S+)$", (PROM / "alerts.yml").read_text(),
                       re.M)
    assert sorted(r["name"] for r in rules) == sorted(names)
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not bad, bad


def test_a_healthy_cluster_fires_nothing(lab: Lab) -> None:
    assert firing(lab) == []
    # ...and it is the active's view the real-server rules look at
    state = api(lab, "query", query="lvs:real_server_state:active")["result"]
    assert sorted((s["metric"]["virtual"], s["metric"]["server"], s["metric"]["state"])
                  for s in state) == [("echo", "rs1", "up"), ("echo", "rs2", "up"),
                                      ("http", "rs1", "up"), ("http", "rs2", "up")]


def test_a_dead_real_server_fires_real_server_down(lab: Lab) -> None:
    lab.kill("rs1", link_down=True)
    try:
        def down() -> list[tuple[str, str]]:
            return sorted((a["virtual"], a["server"]) for a in firing(lab)
                          if a["alertname"] == "LvsRealServerDown")
        both = [("echo", "rs1"), ("http", "rs1")]  # each virtual's check fires on its own
        wait_for(lambda: down() == both, 40, "LvsRealServerDown for rs1 in both virtuals")
        names = {a["alertname"] for a in firing(lab)}
        assert "LvsVirtualServiceDown" not in names  # rs2 still serves both
        assert names <= {"LvsRealServerDown"}, names
    finally:
        lab.start("rs1")
    wait_for(lambda: not any(a["alertname"] == "LvsRealServerDown" for a in firing(lab)), 60,
             "LvsRealServerDown to resolve once rs1 is back")


def test_every_dashboard_query_returns_series(lab: Lab) -> None:
    """Last: by now the lab has seen a real server go down and come back, so the series of
    events (health transitions) exist too."""
    empty, errors = [], []
    for title, expr in dashboard_queries():
        if any(name in expr for name in NOT_IN_THIS_LAB):
            continue
        res = lab.exec("client", "curl", "-sG", "--data-urlencode",
                       f"query={expr.replace('$__rate_interval', RATE_WINDOW)}",
                       f"{API}/query")
        body = json.loads(res.stdout)
        if body["status"] != "success":
            errors.append((title, expr, body.get("error")))
        elif not body["data"]["result"]:
            empty.append((title, expr))
    assert not errors, errors
    assert not empty, "queries without series:\n" + "\n".join(f"{t}: {e}" for t, e in empty)
