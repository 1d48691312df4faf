"""bench/maglev.py's core on a tiny size, so that the benchmark cannot rot: the numbers it
reports are the ones the Maglev module's properties promise."""

from __future__ import annotations

import json

from bench import maglev as bench


def test_health_changes_move_only_what_they_must_and_config_changes_are_measured():
    rows = bench.measure((2, 5), seeds=2)
    assert {(r.event, r.n) for r in rows} == {(e, n) for e in bench.EVENTS for n in (2, 5)}
    for row in rows:
        assert 0 <= row.moved <= 1 and 0 < row.necessary <= 1
        if row.event in bench.HEALTH:
            assert row.excess <= bench.TARGET
        if row.event in ("down", "up", "remove"):
            assert abs(row.necessary - 1 / row.n) < 0.01
    summaries = bench.summarise(rows)
    assert [s.event for s in summaries[:2]] == ["down", "down"]
    assert all(s.ok for s in summaries if s.event in bench.HEALTH)


def test_a_change_of_table_size_moves_nearly_every_flow():
    before, after = bench.tables("add", 81, seed=1)
    assert (len(before), len(after)) == (32749, 65521)
    assert bench.moved_across_sizes(before, after, flows=5000) > 0.9
    assert abs(bench.necessary(before, after) - 1 / 82) < 0.01


def test_timings_plot_json_and_docs_section(tmp_path, monkeypatch):
    timed = bench.timings((10,))
    assert timed[0].size == 32749 and timed[0].cold > 0 and timed[0].warm > 0
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Maglev\n\nold\n\n## Other\n\nkept\n")
    monkeypatch.setattr(bench, "REPO", tmp_path.parent)
    out, png = tmp_path / "m.json", tmp_path / "m.png"
    monkeypatch.setattr(bench, "write_docs", lambda text: docs.write_text(
        docs.read_text().replace("## Maglev\n\nold\n", text)))
    code = bench.main(["--seeds", "1", "--sizes", "2,3", "--build-sizes", "10",
                       "--json", str(out), "--png", str(png), "--write-docs"])
    assert code == 0
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 2 * len(bench.EVENTS) and data["timings"][0]["n"] == 10
    assert png.stat().st_size > 10_000
    text = docs.read_text()
    assert "## Maglev" in text and "| down | 2 |" in text and "## Other\n\nkept" in text
    assert "bench/maglev.py --seeds 1" in text
