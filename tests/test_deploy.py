"""The deployment files are valid: compose (validated by docker-compose, no engine needed)."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def test_compose_file_is_valid() -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose missing: run the README's test command (make test)")
    res = subprocess.run(["docker-compose", "-f", "deploy/compose.yaml", "config"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    services = subprocess.run(["docker-compose", "-f", "deploy/compose.yaml", "config",
                               "--services"], capture_output=True, text=True, timeout=60)
    assert set(services.stdout.split()) == {"etcd", "router1", "router2", "router3"}
