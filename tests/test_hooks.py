"""active_cmd / inactive_cmd: no shell, a timeout that kills the process group, logged."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from agent.hooks import run_hook


async def test_runs_without_a_shell_and_passes_the_environment(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    out = tmp_path / "out"
    script = tmp_path / "hook.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s|" "$@" > {out}\necho "$LVS_NODE" >> {out}\n')
    script.chmod(0o755)
    caplog.set_level(logging.INFO)
    rc = await run_hook("active_cmd", f"{script} 'a b' $HOME;rm", {"LVS_NODE": "r7"})
    assert rc == 0
    # Quotes group words as a shell would, but nothing is expanded or interpreted.
    assert out.read_text() == "a b|$HOME;rm|r7\n"
    assert "active_cmd" in caplog.text and "exited 0" in caplog.text


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = tmp_path / "slow.sh"
    script.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    script.chmod(0o755)
    start = time.monotonic()
    assert await run_hook("inactive_cmd", str(script), {}, limit=0.5) is None
    assert time.monotonic() - start < 5
    child = int(pidfile.read_text())
    time.sleep(0.2)
    stat = Path(f"/proc/{child}/stat")
    # Gone, or a zombie waiting for init to reap it: either way it no longer runs.
    assert not stat.exists() or stat.read_text().split(") ")[1][0] == "Z"


async def test_failures_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    assert await run_hook("active_cmd", "/nonexistent/program", {}) is None
    assert "cannot start" in caplog.text
    assert await run_hook("active_cmd", "'unbalanced", {}) is None
    assert "cannot split" in caplog.text
    assert await run_hook("active_cmd", None, {}) is None
    assert await run_hook("active_cmd", "/bin/false", {}) == 1
