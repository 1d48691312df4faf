"""The README's two commands work as written: as root they run as they are (a minimal Debian
box has no sudo); run by another user, make runs itself again through sudo."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def make(*args: str, user: str | None = None, path: str = "/usr/bin:/bin",
         ) -> subprocess.CompletedProcess[str]:
    cmd = ["make", "-C", str(REPO), *args]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", "env", f"PATH={path}", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_as_root_the_commands_run_as_they_are() -> None:
    for goal, line in (("lab", ".venv/bin/lvslab up"), ("test", "scripts/test.sh")):
        dry = make("-n", goal)
        assert dry.returncode == 0, dry.stderr
        assert "scripts/setup.sh" in dry.stdout and line in dry.stdout
        assert "sudo" not in dry.stdout


def test_another_user_goes_through_sudo_or_is_told_to_be_root() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # not under pytest's root-only tmp dir
        bin_dir = Path(tmp)
        bin_dir.chmod(0o777)
        fake = bin_dir / "sudo"  # records how it was called
        fake.write_text(f'#!/bin/sh\necho "$*" > {tmp}/called\n')
        fake.chmod(0o755)
        res = make("lab", user="nobody", path=f"{tmp}:/usr/bin:/bin")
        assert res.returncode == 0, res.stderr
        assert (bin_dir / "called").read_text() == "make lab\n"

    no_sudo = make("test", user="nobody")
    assert no_sudo.returncode != 0
    assert "make test: needs root, and this system has no sudo: run it as root" in no_sudo.stderr

    lint = make("-n", "lint", user="nobody")  # not a root target: no sudo
    assert lint.returncode == 0 and ".venv/bin/ruff check ." in lint.stdout
