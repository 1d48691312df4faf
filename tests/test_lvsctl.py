"""lvsctl as an operator runs it: a real process against a real etcd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import lvscf
from lvslab.etcd_server import LocalEtcd, free_port

pytestmark = pytest.mark.etcd

LVSCTL = str(Path(sys.executable).parent / "lvsctl")
EXAMPLE = Path("deploy/examples/lvs.cf")


def lvsctl(*args: str, etcd: str | None = None, cluster: str = "default",
           ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LVS_CLUSTER=cluster)
    env.pop("LVS_ETCD", None)
    if etcd:
        env["LVS_ETCD"] = etcd
    return subprocess.run([LVSCTL, *args], capture_output=True, text=True, env=env, timeout=60)


def bumped(tmp_path: Path, serial: int, old: str = "", new: str = "") -> Path:
    text = EXAMPLE.read_text().replace("serial_no = 1", f"serial_no = {serial}")
    path = tmp_path / f"lvs-{serial}.cf"
    path.write_text(text.replace(old, new) if old else text)
    return path


def test_validate_good_and_broken(tmp_path: Path) -> None:
    ok = lvsctl("config", "validate", str(EXAMPLE))
    assert ok.returncode == 0 and "OK" in ok.stdout and "2 virtual services" in ok.stdout
    broken = tmp_path / "broken.cf"
    broken.write_text("serial_no = 1\nvirtual web {\n  address = 10.0.0.300\n"
                      "  scheduler = fastest\n  server a {\n    weight = 99999\n  }\n")
    bad = lvsctl("config", "validate", str(broken))
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    lines = bad.stderr.splitlines()
    assert any(line.startswith(f"{broken}:3: ") for line in lines), bad.stderr
    assert any(line.startswith(f"{broken}:4: ") and "fastest" in line for line in lines)
    assert any(line.startswith(f"{broken}:6: ") for line in lines)
    assert any("unclosed" in line or "never closed" in line or "brace" in line
               for line in lines), bad.stderr
    assert "nothing done" in lines[-1]


def test_validate_and_push_refuse_what_cannot_run(tmp_path: Path, etcd_server: LocalEtcd,
                                                  cluster_name: str) -> None:
    """A VIP without a device reads well but no router could run it: refused, at its line,
    with the fix; push stores nothing (not even with --force)."""
    text = EXAMPLE.read_text().replace("serial_no = 1", "serial_no = 7")
    lines = text.splitlines()
    n = next(i for i, line in enumerate(lines, 1) if "address = 10.0.0.100 eth0:1" in line)
    nodev = tmp_path / "nodev.cf"
    nodev.write_text(text.replace("10.0.0.100 eth0:1", "10.0.0.100", 1))
    assert lvscf.parse_file(nodev).config is not None  # it reads well

    bad = lvsctl("config", "validate", str(nodev))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.splitlines()[0] == (
        f"{nodev}:{n}: virtual 'http': address 10.0.0.100 needs a device, "
        "e.g. 'address = 10.0.0.100 eth0:1'")
    assert "nothing done" in bad.stderr.splitlines()[-1]

    url = etcd_server.url
    for extra in ((), ("--force",)):
        push = lvsctl("config", "push", *extra, str(nodev), etcd=url, cluster=cluster_name)
        assert push.returncode == 1 and f"{nodev}:{n}: virtual 'http'" in push.stderr
    shown = lvsctl("config", "show", etcd=url, cluster=cluster_name)
    assert shown.returncode == 1 and "has no configuration yet" in shown.stderr


@pytest.mark.slow
def test_push_show_diff_status(tmp_path: Path, etcd_server: LocalEtcd, cluster_name: str) -> None:
    url = etcd_server.url
    first = lvsctl("config", "push", str(EXAMPLE), etcd=url, cluster=cluster_name)
    assert first.returncode == 0, first.stderr
    assert f"stored serial_no 1 in cluster {cluster_name}" in first.stdout

    again = lvsctl("config", "push", str(EXAMPLE), etcd=url, cluster=cluster_name)
    assert again.returncode == 1 and "not newer" in again.stderr
    assert again.stderr.count("\n") == 1  # one line

    shown = lvsctl("config", "show", etcd=url, cluster=cluster_name)
    assert shown.returncode == 0
    assert lvscf.parse(shown.stdout).config == lvscf.load(EXAMPLE)
    as_json = json.loads(lvsctl("config", "show", "-o", "json", etcd=url,
                                cluster=cluster_name).stdout)
    assert as_json["virtuals"][0]["address"]["ip"] == "10.0.0.100"
    source = lvsctl("config", "show", "--source", etcd=url, cluster=cluster_name)
    assert source.stdout == EXAMPLE.read_text()

    newer = bumped(tmp_path, 2, "        weight = 2 ", "        weight = 5 ")
    diff = lvsctl("config", "diff", str(newer), etcd=url, cluster=cluster_name)
    assert diff.returncode == 1
    assert "virtual http / server web2: weight 2 -> 5" in diff.stdout
    same = lvsctl("config", "diff", str(EXAMPLE), etcd=url, cluster=cluster_name)
    assert same.returncode == 0 and "no changes" in same.stdout

    pushed = lvsctl("config", "push", str(newer), etcd=url, cluster=cluster_name)
    assert pushed.returncode == 0
    assert "(was 1)" in pushed.stdout and "weight 2 -> 5" in pushed.stdout

    history = lvsctl("config", "history", etcd=url, cluster=cluster_name)
    assert "serial_no 1" in history.stdout and "serial_no 2" in history.stdout

    status = lvsctl("status", etcd=url, cluster=cluster_name)
    assert status.returncode == 0, status.stderr
    assert "serial_no 2" in status.stdout and "web2" in status.stdout
    data = json.loads(lvsctl("status", "-o", "json", etcd=url, cluster=cluster_name).stdout)
    assert data["config"]["serial_no"] == 2 and data["leader"] is None
    assert [v["name"] for v in data["virtuals"]] == ["http", "https"]


def test_status_shows_nodes_leader_health_and_junk(etcd_server: LocalEtcd,
                                                   cluster_name: str) -> None:
    url = etcd_server.url
    assert lvsctl("config", "push", str(EXAMPLE), etcd=url, cluster=cluster_name).returncode == 0
    prefix = f"/lvs/{cluster_name}/"
    etcd_server.etcdctl("put", prefix + "leader", json.dumps({"node": "primary", "since": "x"}))
    etcd_server.etcdctl("put", prefix + "nodes/primary", json.dumps({"role": "active"}))
    etcd_server.etcdctl("put", prefix + "health/http/web1",
                        json.dumps({"state": "down", "reason": "connect refused"}))
    etcd_server.etcdctl("put", prefix + "health/http/web2", "{not json")
    etcd_server.etcdctl("put", prefix + "bogus/key", "1")
    data = json.loads(lvsctl("status", "-o", "json", etcd=url, cluster=cluster_name).stdout)
    assert data["leader"]["node"] == "primary" and data["leader"]["term"] > 0
    assert data["nodes"]["primary"]["role"] == "active"
    web1 = data["virtuals"][0]["servers"][0]
    assert web1["state"] == "down" and web1["reason"] == "connect refused"
    assert len(data["junk"]) == 2
    table = lvsctl("status", etcd=url, cluster=cluster_name)
    assert table.returncode == 0 and "2 key(s) not understood" in table.stdout


def test_unreachable_etcd_is_one_clear_line() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for args in (("status",), ("config", "show"), ("config", "push", str(EXAMPLE))):
        res = lvsctl("--timeout", "1", *args, etcd=dead)
        assert res.returncode == 1, args
        assert res.stderr.startswith(f"lvsctl: etcd unreachable at {dead}"), res.stderr
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_bad_settings_are_clear() -> None:
    res = lvsctl("status", etcd="ftp://x")
    assert res.returncode == 1 and "scheme must be http or https" in res.stderr
    res = lvsctl("--cluster", "bad/name", "status")
    assert res.returncode == 2 and "bad cluster name" in res.stderr


def test_status_says_when_the_stored_config_cannot_run(etcd_server: LocalEtcd,
                                                       cluster_name: str) -> None:
    """Written past lvsctl (by hand, or an older version): status names the problem."""
    from cluster.documents import StoredConfig

    text = EXAMPLE.read_text().replace("10.0.0.100 eth0:1", "10.0.0.100")
    cfg = lvscf.parse(text).config
    assert cfg is not None
    lines = [i for i, t in enumerate(text.splitlines(), 1) if "= 10.0.0.100" in t]
    etcd_server.etcdctl("put", f"/lvs/{cluster_name}/config",
                        StoredConfig(cfg, text, "now", "by hand").encode())
    data = json.loads(lvsctl("status", "-o", "json", etcd=etcd_server.url,
                             cluster=cluster_name).stdout)
    assert [p.split(":")[1] for p in data["config_problems"]] == [str(n) for n in lines]
    assert all("needs a device" in p for p in data["config_problems"])
    table = lvsctl("status", etcd=etcd_server.url, cluster=cluster_name)
    assert "stored config cannot run (agents refuse it)" in table.stdout


@pytest.mark.slow
def test_the_first_push_creates_the_hash_seed_once(tmp_path: Path, etcd_server: LocalEtcd,
                                                   cluster_name: str) -> None:
    from cluster.documents import default_seed

    url = etcd_server.url
    none = lvsctl("seed", etcd=url, cluster=cluster_name)
    assert none.returncode == 0
    assert f"none stored; routers use {default_seed(cluster_name)}" in none.stdout
    first = lvsctl("config", "push", str(EXAMPLE), etcd=url, cluster=cluster_name)
    assert "created the cluster's hash seed" in first.stdout
    shown = lvsctl("seed", etcd=url, cluster=cluster_name).stdout
    stored = json.loads(etcd_server.etcdctl("get", "--print-value-only",
                                            f"/lvs/{cluster_name}/seed"))
    assert shown.startswith(f"seed {stored['seed']} (created ")
    assert "(config push)" in stored["created_by"]
    second = lvsctl("config", "push", str(bumped(tmp_path, 2)), etcd=url, cluster=cluster_name)
    assert second.returncode == 0 and "hash seed" not in second.stdout  # never changed again
    assert lvsctl("seed", etcd=url, cluster=cluster_name).stdout == shown

    refused = lvsctl("seed", "--new", etcd=url, cluster=cluster_name)
    assert refused.returncode == 1 and "add --yes" in refused.stderr
    renewed = lvsctl("seed", "--new", "--yes", etcd=url, cluster=cluster_name)
    assert renewed.returncode == 0 and renewed.stdout.startswith("new seed ")
    assert lvsctl("seed", etcd=url, cluster=cluster_name).stdout != shown

    etcd_server.etcdctl("put", f"/lvs/{cluster_name}/seed", "junk")
    junk = lvsctl("seed", etcd=url, cluster=cluster_name)
    assert "junk in etcd" in junk.stdout
    third = lvsctl("config", "push", str(bumped(tmp_path, 3)), etcd=url, cluster=cluster_name)
    assert "the hash seed in etcd is junk" in third.stderr  # left alone, but said
