"""bench/scale.py's pure parts: the config it pushes is the lab's plus N servers, valid and
runnable, and its table and picture come from the measured points."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from bench.scale import Point, config_text, table, write_png
from cluster import lvscf
from lvslab.config_file import lab_lvs_cf
from lvslab.topology import Topology


def test_the_pushed_config_is_the_labs_plus_n_servers_and_runs() -> None:
    topo = Topology("sc", "10.197.0.0/24", "10.197.1.0/24", routers=2, servers=1)
    base = lab_lvs_cf(topo)
    text = config_text(base, 7, topo.vip, 5, 16)
    result = lvscf.parse(text, "scale.cf", runnable=True)
    assert result.config is not None, [str(e) for e in result.errors]
    cfg = result.config
    assert cfg.serial_no == 7
    scale = [v for v in cfg.virtuals if v.name.startswith("scale")]
    assert len(scale) == 5 and all(len(v.servers) == 16 for v in scale)
    assert len({s.address for v in scale for s in v.servers}) == 80
    assert {v.check for v in scale} == {"none"}


def test_table_and_picture(tmp_path: Path) -> None:
    p = Point(servers=40000, virtuals=2500, push_s=2.8, all_run_s=9.0, served_s=8.5,
              served_log_s=6.1, parts_written=2540, kbytes_written=7282, rss_mb={"r1": 250.0},
              cpu={"r1": 0.05}, etcd_keys=6000, etcd_mbytes=7.7,
              etcd_rps={"LeaseKeepAlive": 4.0}, scrape_s=0.2, scrape_mb=1.2, stalls=0)
    text = table([p])
    assert "| 40,000 | 2,500 | 2.80 s | 9.00 s | 8.50 s | 6.10 s | 2,540 (7,282 KiB) | r1 250 |" \
        in text
    assert json.loads(json.dumps(asdict(p)))["servers"] == 40000
    write_png([p], tmp_path / "scale.png")
    assert (tmp_path / "scale.png").stat().st_size > 10_000


def test_the_active_s_log_says_when_its_kernel_held_the_push(tmp_path: Path) -> None:
    """From the push's pushed_at (UTC) to the last "applied" line (local time) before the
    bench saw it served; lines before the push or well after do not count."""
    from datetime import datetime

    from bench.scale import applied_after

    def local(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timestamp()

    log = tmp_path / "r1.log"
    log.write_text(
        "2026-12-07 04:00:00,100 r1 INFO agent.dataplane.service: data plane: 2 change(s) "
        "applied\n"
        "2026-12-07 04:00:05,250 r1 INFO agent.dataplane.service: data plane: 42500 "
        "change(s) applied\n"
        "2026-12-07 04:00:06,000 r1 INFO agent.dataplane.service: data plane: 1 change(s) "
        "applied 3.0 ms after detection\n"
        "2026-12-07 04:01:00,000 r1 INFO agent.dataplane.service: data plane: 3 change(s) "
        "applied\n")
    pushed = datetime.fromtimestamp(local("2026-12-07 04:00:01")).astimezone()
    pushed_at = pushed.isoformat()
    got = applied_after(log, pushed_at, local("2026-12-07 04:00:05") + 0.3)
    assert got is not None and abs(got - 4.25) < 1e-6
    assert applied_after(log, None, 0.0) is None
