#!/usr/bin/env python3
"""Generate the Grafana dashboard deploy/grafana/dashboards/piranha-etcd.json.

The dashboard is written here, as a list of rows of panels with their PromQL, because the
JSON Grafana wants is long and repetitive (ids, grid positions, datasource on every target).
Edit this file, then run it; tests/test_grafana_dashboard.py checks that the committed JSON
is what this script writes, and the lab test (tests/test_prometheus_lab.py) that every query
returns series from a real Prometheus scraping real agents.

Usage:
    .venv/bin/python scripts/grafana_dashboard.py          # (re)write the JSON
    .venv/bin/python scripts/grafana_dashboard.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "deploy/grafana/dashboards/piranha-etcd.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # provisioning/datasources
RATE = "$__rate_interval"
ACTIVE = 'on (instance) lvs_role{role="active"} == 1'
"""Suffix of ``and``: keep the active router's series only."""
WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # timeseries | stat | state-timeline | table | bargauge
    queries: tuple[Query, ...]
    description: str = ""
    unit: str = ""
    width: int = 8
    height: int = 8
    mappings: tuple[tuple[str, str, str], ...] = ()  # (value, text, colour)
    options: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)


def q(expr: str, legend: str = "", **kw: Any) -> Query:
    return Query(" ".join(expr.split()), legend, **kw)


ROLE_MAP = (("0", "backup", "blue"), ("1", "candidate", "orange"), ("2", "active", "green"))
STATE_MAP = (("0", "down", "red"), ("1", "disabled", "purple"), ("2", "drained", "yellow"),
             ("3", "up", "green"))
STATE_RANK = ('lvs:real_server_state:active{state="up"} * 3 '
              'or lvs:real_server_state:active{state="drained"} * 2 '
              'or lvs:real_server_state:active{state="disabled"} '
              'or lvs:real_server_state:active{state="down"} * 0')
BARS = {"drawStyle": "bars", "fillOpacity": 80, "lineWidth": 1}


def quantiles(metric: str, by: str, legend: str, window: str = RATE) -> tuple[Query, ...]:
    return tuple(
        q(f"histogram_quantile({p}, sum by ({by}, le) (rate({metric}_bucket[{window}])))",
          f"p{int(p * 100)} {legend}".strip())
        for p in (0.5, 0.99)
    )


ROWS: list[tuple[str, list[Panel]]] = [
    ("Cluster at a glance", [
        Panel("Active router", "stat", (q('lvs_role{role="active"} == 1', "{{instance}}"),),
              "The router holding the lease and the VIPs. Two names: split brain "
              "(LvsMultipleActiveRouters); none: LvsNoActiveRouter.", width=4, height=5,
              options={"textMode": "name", "colorMode": "background",
                       "reduceOptions": {"calcs": ["lastNotNull"]}}),
        Panel("Routers scraped", "stat", (q('sum(up{job="pulse"})', "up"),
                                          q('count(up{job="pulse"})', "configured")),
              "Routers whose agent answers /metrics, of those Prometheus knows.",
              width=4, height=5),
        Panel("Leader term", "stat", (q("max(lvs_term)", "term"),),
              "Raises by one at every takeover.", width=4, height=5),
        Panel("Config serial", "stat", (q("max(lvs_config_stored_serial)", "stored in etcd"),
                                        q("min(lvs_config_serial)", "oldest in force")),
              "serial_no stored and the oldest any router runs: they differ while a push "
              "rolls out, or if a router refused it (LvsConfigNotRunning).",
              width=4, height=5),
        Panel("Routers", "table", (q("lvs_agent_info", table=True, instant=True),),
              "Every agent: node name, version, cluster, data plane.", width=8, height=5,
              options={"showHeader": True}),
        Panel("Role per router", "state-timeline", (q(
            'max by (instance) ((lvs_role{role="active"} == 1) * 2 '
            'or (lvs_role{role="candidate"} == 1) or (lvs_role{role="backup"} == 1) * 0)',
            "{{instance}}"),), "Who was active when.", width=12, mappings=ROLE_MAP),
        Panel("Takeovers", "timeseries", (q(
            f'sum by (instance) (increase(lvs_role_transitions_total{{to="active"}}[{RATE}]))',
            "{{instance}}"),), "Routers becoming active (LvsFailoverFlapping: more than "
            "two in 30 minutes).", width=6, custom=BARS),
        Panel("Leader changes by reason", "timeseries", (q(
            f"max by (reason) (increase(lvs_leader_changes_total[{RATE}]))", "{{reason}}"),),
            "Why the leader changed, as the routers saw it.", width=6, custom=BARS),
        Panel("Failover duration (detection to VIP up)", "timeseries",
              quantiles("lvs_failover_duration_seconds", "instance", "{{instance}}", "1h"),
              "Measured by the new active; quantiles of the last hour.", unit="s", width=8),
        Panel("Stalls", "timeseries", (
            q(f"increase(lvs_stalls_total[{RATE}])", "{{instance}}"),),
            "Event loop late by more than the safety margin: a stalled router may lose "
            "its lease.", width=8, custom=BARS),
        Panel("VIPs held", "timeseries", (q("lvs_vips_held", "{{instance}}"),),
              "Only the active holds VIPs.", width=8),
    ]),
    ("Heartbeats and etcd", [
        Panel("Heartbeat age per peer", "timeseries", (q(
            "lvs_heartbeat_peer_age_seconds >= 0", "{{instance}} <- {{peer}}"),),
            "Seconds since the router last heard the peer (LvsHeartbeatPeerSilent).",
            unit="s", width=8),
        Panel("Heartbeats received", "timeseries", (
            q(f"sum by (instance) (rate(lvs_heartbeat_accepted_total[{RATE}]))",
              "{{instance}} accepted"),
            q(f"sum by (instance, reason) (rate(lvs_heartbeat_dropped_total[{RATE}]))",
              "{{instance}} dropped {{reason}}")),
            "Per second. Drops by reason: LvsBadHeartbeats.", unit="pps", width=8),
        Panel("etcd", "timeseries", (
            q("lvs_etcd_reachable", "{{instance}} reachable"),
            q("lvs_etcd_ok", "{{instance}} lease ok")),
            "1: reachable / lease confirmed (LvsEtcdUnreachable).", width=8),
        Panel("etcd request latency", "timeseries",
              quantiles("lvs_etcd_request_duration_seconds", "op", "{{op}}"),
              "Over every router, by operation.", unit="s", width=12),
        Panel("Lease refresh latency", "timeseries",
              quantiles("lvs_lease_refresh_latency_seconds", "instance", "{{instance}}"),
              "A refresh slower than the lease TTL loses the lease.", unit="s", width=12),
    ]),
    ("Real servers", [
        Panel("Real servers (the active's verdict)", "state-timeline", (q(
            f"max by (virtual, server) ({STATE_RANK})", "{{virtual}} {{server}}"),),
            "The effective state the data plane follows (LvsRealServerDown).",
            width=12, height=9, mappings=STATE_MAP),
        Panel("Up per virtual", "bargauge", (
            q(f'sum by (virtual) (lvs_virtual_servers{{state="up"}} and {ACTIVE})',
              "{{virtual}}", instant=True),),
            "Real servers up of each virtual service, as the active programs them (0: "
            "LvsVirtualServiceDown); at any size, also past --metrics-max-servers.",
            width=6, height=9),
        Panel("Weight in force", "timeseries", (q(
            f"lvs_real_server_weight and {ACTIVE}", "{{virtual}} {{server}}"),),
            "On the active router.", width=6, height=9),
        Panel("Own checks per router", "timeseries", (q(
            "lvs_real_server_up", "{{instance}}: {{virtual}} {{server}}"),),
            "1: this router's own checks see the server up. Routers that disagree for "
            "long: LvsRealServerHealthDisputed.", width=12),
        Panel("Health transitions", "timeseries", (q(
            f"sum by (instance, to) (increase(lvs_health_transitions_total[{RATE}]))",
            "{{instance}} to {{to}}"),), "Real servers changing state.", width=12,
            custom=BARS),
    ]),
    ("Traffic", [
        Panel("Connections per virtual", "timeseries", (q(
            f"sum by (virtual) (rate(lvs_virtual_connections_total[{RATE}]))",
            "{{virtual}}"),), "New connections per second (kernel counters).",
            unit="cps", width=8),
        Panel("Bytes per virtual", "timeseries", (
            q(f"sum by (virtual) (rate(lvs_virtual_bytes_in_total[{RATE}]))", "{{virtual}} in"),
            q(f"sum by (virtual) (rate(lvs_virtual_bytes_out_total[{RATE}]))",
              "{{virtual}} out")), "", unit="Bps", width=8),
        Panel("Packets per virtual", "timeseries", (
            q(f"sum by (virtual) (rate(lvs_virtual_packets_in_total[{RATE}]))",
              "{{virtual}} in"),
            q(f"sum by (virtual) (rate(lvs_virtual_packets_out_total[{RATE}]))",
              "{{virtual}} out")), "", unit="pps", width=8),
        Panel("Connections per real server", "timeseries", (q(
            f"sum by (virtual, server) (rate(lvs_real_server_connections_total[{RATE}]))",
            "{{virtual}} {{server}}"),), "", unit="cps", width=8),
        Panel("Bytes per real server", "timeseries", (
            q(f"sum by (virtual, server) (rate(lvs_real_server_bytes_in_total[{RATE}]))",
              "{{virtual}} {{server}} in"),
            q(f"sum by (virtual, server) (rate(lvs_real_server_bytes_out_total[{RATE}]))",
              "{{virtual}} {{server}} out")), "", unit="Bps", width=8),
        Panel("Active and inactive connections (IPVS)", "timeseries", (
            q(f"lvs_real_server_active_connections and {ACTIVE}",
              "{{virtual}} {{server}} active"),
            q(f"lvs_real_server_inactive_connections and {ACTIVE}",
              "{{virtual}} {{server}} inactive")),
            "IPVS only: nftables keeps no such counters.", width=8),
    ]),
    ("Checks", [
        Panel("Checks by result", "timeseries", (q(
            f"sum by (kind, result) (rate(lvs_checks_by_result_total[{RATE}]))",
            "{{kind}} {{result}}"),), "Per second, every router.", unit="ops", width=8),
        Panel("Check latency", "timeseries",
              quantiles("lvs_check_duration_seconds", "kind", "{{kind}}"),
              "LvsCheckLatencyHigh: p90 over a second.", unit="s", width=8),
        Panel("Checks running", "timeseries", (
            q("lvs_checks_in_flight", "{{instance}}"),), "", width=8),
    ]),
    ("Reconcile and drift", [
        Panel("Reconcile duration", "timeseries",
              quantiles("lvs_reconcile_duration_seconds", "instance", "{{instance}}"),
              "Config or health change to kernel table.", unit="s", width=8),
        Panel("Kernel changes applied", "timeseries", (
            q(f"sum by (instance) (increase(lvs_dataplane_ops_total[{RATE}]))",
              "{{instance}}"),), "", width=8, custom=BARS),
        Panel("Drift repaired", "timeseries", (
            q(f"sum by (instance) (increase(lvs_dataplane_drift_repairs_total[{RATE}]))",
              "{{instance}} repaired"),
            q(f"sum by (instance) (increase(lvs_dataplane_errors_total[{RATE}]))",
              "{{instance}} kernel errors"),
            q(f"sum by (instance) (increase(lvs_config_refused_total[{RATE}]))",
              "{{instance}} configs refused")),
            "Someone else changed the kernel table (LvsDriftRepairedRepeatedly).",
            width=8, custom=BARS),
    ]),
]


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for i, query in enumerate(p.queries):
        t: dict[str, Any] = {"datasource": DATASOURCE, "expr": query.expr,
                             "legendFormat": query.legend, "refId": chr(ord("A") + i)}
        if query.instant:
            t["instant"] = True
            t["range"] = False
        if query.table:
            t["format"] = "table"
        targets.append(t)
    defaults: dict[str, Any] = {}
    if p.unit:
        defaults["unit"] = p.unit
    if p.custom:
        defaults["custom"] = p.custom
    if p.mappings:
        defaults["mappings"] = [{"type": "value", "options": {
            v: {"text": text, "color": colour, "index": i}
            for i, (v, text, colour) in enumerate(p.mappings)}}]
        defaults["color"] = {"mode": "thresholds"}
    return {"id": pid, "type": p.kind, "title": p.title, "description": p.description,
            "datasource": DATASOURCE, "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": p.options, "targets": targets}


def dashboard() -> dict[str, Any]:
    """The dashboard document (panels laid out left to right, rows top to bottom)."""
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for title, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        x, line = 0, 0
        for p in row:
            if x + p.width > WIDTH:
                x, y, line = 0, y + line, 0
            panels.append(_panel(p, pid, x, y))
            pid, x, line = pid + 1, x + p.width, max(line, p.height)
        y += line
    return {
        "uid": "piranha-etcd", "title": "piranha-etcd", "tags": ["lvs", "piranha-etcd"],
        "description": "HA layer-4 load balancer: routers, heartbeats, real servers, "
                       "traffic, checks, reconcile (generated by scripts/grafana_dashboard.py)",
        "editable": True, "schemaVersion": 39, "version": 1, "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"}, "timezone": "", "graphTooltip": 1,
        "templating": {"list": []}, "annotations": {"list": []}, "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of a dashboard document."""
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the JSON is out of date")
    args = ap.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run scripts/grafana_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
