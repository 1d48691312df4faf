"""``-o json`` on every lvsctl command: each prints JSON a program can read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from cluster.lvsctl.main import cli
from lvslab.etcd_server import LocalEtcd

LVSCTL = str(Path(sys.executable).parent / "lvsctl")
EXAMPLE = Path("deploy/examples/lvs.cf")


def leaves(group: click.Group, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], click.Command]:
    out: dict[tuple[str, ...], click.Command] = {}
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out.update(leaves(cmd, (*path, name)))
        else:
            out[(*path, name)] = cmd
    return out


#: Commands that serve rather than print: ``web`` serves its JSON at /api/state.
SERVERS = {("web",)}


def test_every_command_has_an_output_option_with_json() -> None:
    commands = leaves(cli)
    assert ("history",) in commands and ("events",) in commands and ("watch",) in commands
    assert set(commands) >= SERVERS
    for path, cmd in commands.items():
        if path in SERVERS:
            continue
        opt = next((p for p in cmd.params if p.name == "output"), None)
        assert opt is not None, f"lvsctl {' '.join(path)} has no -o/--output"
        assert "-o" in opt.opts and "json" in opt.type.choices, path  # type: ignore[attr-defined]


def run(*args: str, url: str, cluster: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LVS_CLUSTER=cluster, LVS_ETCD=url)
    return subprocess.run([LVSCTL, *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.etcd
@pytest.mark.slow
def test_commands_print_json(tmp_path: Path, etcd_server: LocalEtcd, cluster_name: str) -> None:
    url = etcd_server.url

    def js(*args: str, rc: int = 0) -> object:
        proc = run(*args, "-o", "json", url=url, cluster=cluster_name)
        assert proc.returncode == rc, proc.stderr
        return json.loads(proc.stdout)

    assert js("config", "validate", str(EXAMPLE)) == {
        "file": str(EXAMPLE), "ok": True, "serial_no": 1, "routers": 2, "virtuals": 2,
        "servers": 4}
    pushed = js("config", "push", str(EXAMPLE))
    assert pushed["serial_no"] == 1 and pushed["previous"] is None and pushed["seed_created"]
    newer = tmp_path / "lvs.cf"
    newer.write_text(EXAMPLE.read_text().replace("serial_no = 1", "serial_no = 2"))
    assert js("config", "diff", str(newer), rc=1)["changes"] == ["serial_no 1 -> 2"]
    assert js("config", "push", str(newer))["previous"] == 1
    assert [e["serial_no"] for e in js("config", "history")] == [1, 2]
    seed = js("seed")
    assert seed["in_force"] == "stored" and seed["seed"] == seed["stored"]["seed"]
    drained = js("drain", "http", "web1")
    assert (drained["virtual"], drained["server"], drained["admin"]) == ("http", "web1", "drain")
    assert "@" in drained["by"] and drained["at"]
    assert js("enable", "http", "web1")["admin"] is None
    assert [e["kind"] for e in js("history")["events"]] == ["config", "config"]
    failed = run("switchover", "-o", "json", url=url, cluster=cluster_name)
    assert failed.returncode == 1 and "no router is active" in failed.stderr
