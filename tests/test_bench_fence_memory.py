"""bench/fence.py and bench/memory.py at a small size: they run and report what they say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_memory_reports_every_structure(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    subprocess.run([sys.executable, str(REPO / "bench/memory.py"), "--virtuals", "20",
                    "--per-virtual", "4", "--json", str(out)], check=True, capture_output=True,
                   timeout=120)
    result = json.loads(out.read_text())
    assert result["servers"] == 80
    traced = result["traced"]
    assert {"config model", "view: stored verdicts", "health core (active)",
            "nftables backend's kernel model", "total", "process RSS"} <= traced.keys()
    assert traced["view: stored verdicts"] > 0 and traced["total"] > 0
    assert result["resident"]["process RSS"] > 10


@pytest.mark.netns
def test_fence_bench_writes_licences_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "fence.json"
    subprocess.run([sys.executable, str(REPO / "bench/fence.py"), "--services", "40",
                    "--dests", "4", "--json", str(out)], check=True, capture_output=True,
                   timeout=120)
    result = json.loads(out.read_text())
    for table in ("empty", "big"):
        for how in ("netlink", "libnftables"):
            assert result[table][how]["n"] == 30 and result[table][how]["median_ms"] > 0
    during = result["during_apply"]
    assert during["written"] >= 1 and during["n"] >= 1
    assert during["written"] + during["deferred"] + during["kept"] == during["n"]
