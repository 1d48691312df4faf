"""Bad input at scale: a 100 MB lvs.cf or one with a million servers is one clear error
naming the limit, found before the file is read or parsed (never memory exhausted)."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

from cluster import lvscf


def test_a_100_mb_file_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "lvs.cf"
    with big.open("wb") as fh:  # sparse: 100 MB that cost nothing to make
        fh.truncate(100 * 1024 * 1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = lvscf.parse_file(big)
    assert result.config is None
    (problem,) = result.errors
    assert str(problem) == (f"{big}:0: 104,857,600 bytes: more than lvs.cf may hold "
                            "(67,108,864 bytes, 64 MiB)")
    # refused before reading: the process did not grow by the file's size
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024


def test_a_million_servers_are_refused_before_parsing() -> None:
    text = "virtual v {\n address = 10.0.0.1 eth0\n" + "server s {\n}\n" * 1_000_000 + "}\n"
    assert len(text) < lvscf.MAX_BYTES
    result = lvscf.parse(text, "huge.cf")
    assert [str(p) for p in result.errors] == [
        "huge.cf:0: 1,000,000 real servers: more than one config may hold (400,000)"]
    many = "virtual v {\n}\n" * 200_000
    assert "200,000 virtual services: more than one config may hold (100,000)" in str(
        lvscf.parse(many, "v.cf").errors[0])


def test_lvsctl_names_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "lvs.cf"
    with big.open("wb") as fh:
        fh.truncate(80 * 1024 * 1024)
    res = subprocess.run([str(Path(sys.executable).parent / "lvsctl"), "config", "validate",
                          str(big)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1
    assert "83,886,080 bytes: more than lvs.cf may hold" in res.stderr
    assert "1 error, nothing done" in res.stderr
