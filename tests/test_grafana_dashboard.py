"""The provisioned Grafana dashboard: the committed JSON is what scripts/grafana_dashboard.py
writes, it refers to the provisioned datasource, and every query is valid PromQL (checked by
promtool as a recording rule; tests/test_prometheus_lab.py runs them on a real Prometheus)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "piranha-etcd.json"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query in the committed dashboard."""
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


def test_committed_json_is_generated() -> None:
    res = subprocess.run([sys.executable, "scripts/grafana_dashboard.py", "--check"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_dashboard_uses_the_provisioned_datasource() -> None:
    doc = json.loads(DASHBOARD.read_text())
    uid = re.search(r"uid: (\S+)", (GRAFANA / "provisioning/datasources/prometheus.yml")
                    .read_text())
    assert uid is not None
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    for p in panels:
        assert p["targets"], p["title"]
        for t in [p, *p["targets"]]:
            assert t["datasource"] == {"type": "prometheus", "uid": uid.group(1)}, p["title"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    provider = (GRAFANA / "provisioning/dashboards/piranha-etcd.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in provider


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.fail("promtool missing (Debian prometheus): run the README's test command")
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (_, expr) in enumerate(dashboard_queries()):
        lines += [f"      - record: dashboard:query{i}",
                  f"        expr: {json.dumps(expr.replace('$__rate_interval', '1m'))}"]
    (tmp_path / "queries.yml").write_text("\n".join(lines) + "\n")
    res = subprocess.run(["promtool", "check", "rules", "queries.yml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    bad = tmp_path / "bad.yml"  # the check can fail
    bad.write_text("\n".join([*lines[:3], "      - record: x", '        expr: "sum by (a"'])
                   + "\n")
    res = subprocess.run(["promtool", "check", "rules", "bad.yml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
