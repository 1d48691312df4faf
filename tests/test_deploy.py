"""The deployment files are valid and complete.

* deploy/compose.yaml: valid for docker-compose (no engine needed), the services the issue
  asks for, every file it names exists (build contexts, Dockerfiles, mounted files and
  folders, secrets), every image is built from deploy/Dockerfile or a public image pinned by
  tag (nothing is pulled here), and the routers agree with the lvs.cf they mount and with
  Prometheus' scrape targets.
* deploy/systemd/pulse.service: `systemd-analyze verify` finds nothing to say about it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster import lvscf

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
UNIT = DEPLOY / "systemd" / "pulse.service"

# What the compose file mounts from the alerts and dashboard work (deploy/prometheus,
# deploy/grafana): checked by name too, so a rename on either side fails here.
MONITORING_FILES = ("prometheus/prometheus.yml", "prometheus/alerts.yml",
                    "grafana/provisioning/datasources/prometheus.yml",
                    "grafana/provisioning/dashboards/piranha-etcd.yml",
                    "grafana/dashboards/piranha-etcd.json")

# [registry[:port]/]path:tag (Docker's reference grammar, lower case, tag required).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE = re.compile(rf"^(?:[a-z0-9.-]+\.[a-z]+(?::\d+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
                   r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose missing: run the README's test command (make test)")
    return subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors merged, paths absolute)."""
    res = compose()
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def test_compose_file_is_valid() -> None:
    res = compose("--services")
    assert res.returncode == 0, res.stderr
    assert set(res.stdout.split()) == {
        "etcd1", "etcd2", "etcd3", "r1", "r2", "r3", "rs1", "rs2", "client", "prometheus",
        "grafana"}


def test_images_are_built_here_or_pinned(resolved: dict[str, Any]) -> None:
    for name, svc in resolved["services"].items():
        image = svc.get("image", "")
        assert IMAGE.match(image), f"{name}: image {image!r} is not NAME:TAG"
        if "build" in svc:
            context = Path(svc["build"]["context"])
            dockerfile = context / svc["build"].get("dockerfile", "Dockerfile")
            assert context == REPO, f"{name}: builds from {context}"
            assert dockerfile == DEPLOY / "Dockerfile", f"{name}: {dockerfile}"
        else:
            assert "/" in image, f"{name}: {image} is neither built here nor a public image"
            assert not image.endswith(":latest"), f"{name}: {image} is not pinned"
    text = (DEPLOY / "Dockerfile").read_text()
    for base in re.findall(r"(?m)^FROM\s+(\S+)", text):
        assert IMAGE.match(base) and not base.endswith(":latest"), f"Dockerfile FROM {base}"
    for copied in re.findall(r"(?m)^COPY\s+(.+?)\s+\S+$", text):
        for src in copied.split():
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which is missing"


def test_every_file_named_exists(resolved: dict[str, Any]) -> None:
    named_volumes = set(resolved.get("volumes") or {})
    for name, svc in resolved["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source in named_volumes:
                continue
            assert Path(source).is_absolute(), f"{name}: volume {volume}"
            assert Path(source).exists(), f"{name} mounts {source}, which is missing"
        for env_file in svc.get("env_file", []):
            assert Path(env_file).exists(), f"{name}: env_file {env_file} is missing"
    for kind in ("secrets", "configs"):
        for name, item in (resolved.get(kind) or {}).items():
            assert Path(item["file"]).exists(), f"{kind} {name}: {item['file']} is missing"
    for path in MONITORING_FILES:  # from the alerts/dashboard work
        assert (DEPLOY / path).is_file(), f"deploy/{path} is missing"


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_routers_agree_with_their_config_and_prometheus(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    routers = {n: s for n, s in services.items() if "--node" in (s.get("command") or [])}
    assert set(routers) == {"r1", "r2", "r3"}
    targets = set()
    prom = DEPLOY / "prometheus" / "prometheus.yml"
    if prom.exists():
        for job in yaml.safe_load(prom.read_text())["scrape_configs"]:
            if job["job_name"] == "pulse":
                for group in job["static_configs"]:
                    targets |= set(group["targets"])
    for name, svc in routers.items():
        command = svc["command"]
        (mount,) = [v for v in svc["volumes"] if v.split(":")[1] == _option(command, "--config")]
        cfg = lvscf.load(Path(mount.split(":")[0]))  # the real parser: FILE:LINE errors
        router = {r.name: r for r in cfg.routers}[_option(command, "--node")]
        address = svc["networks"]["lan"]["ipv4_address"]
        assert str(router.address) == address, name
        assert _option(command, "--metrics-address") == f"{address}:9100", name
        assert set(svc["cap_add"]) == {"NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"}
        assert svc["cap_drop"] == ["ALL"]
        if prom.exists():
            assert f"{name}:9100" in targets, f"Prometheus does not scrape {name}"
    for server in cfg.virtuals[0].servers:  # the real servers are services of their own
        (svc,) = [s for n, s in services.items() if n == server.name]
        assert svc["networks"]["lan"]["ipv4_address"] == str(server.address)


def verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of ``unit`` with ExecStart= pointing at this venv's pulse
    (the unit names the installed path, which does not exist here)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    pulse = shutil.which("pulse", path=str(Path(__import__("sys").executable).parent))
    assert pulse is not None
    copy = tmp_path / "pulse.service"
    copy.write_text(unit.read_text().replace("/usr/local/bin/pulse", pulse))
    return subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    res = verify(UNIT, tmp_path)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


def test_systemd_unit_verify_can_fail(tmp_path: Path) -> None:
    """systemd only warns about an unknown setting: a typo must still fail the test above."""
    bad = tmp_path / "bad" / "pulse.service"
    bad.parent.mkdir()
    bad.write_text(UNIT.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    res = verify(bad, tmp_path)
    assert "NoNewPrivilege" in res.stderr


def test_systemd_unit_settings() -> None:
    settings: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings[key] = value
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert settings["Restart"] == "on-failure" and settings["WatchdogSec"]
    assert set(settings["CapabilityBoundingSet"].split()) == {
        "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"}
    assert set(settings["RestrictAddressFamilies"].split()) == {
        "AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"}
    assert settings["NoNewPrivileges"] == "yes" and settings["ProtectSystem"] == "strict"
    assert settings["ProtectHome"] == "yes"
    example = DEPLOY / "systemd" / "pulse.env.example"
    variables = dict(line.split("=", 1) for line in example.read_text().splitlines()
                     if line and not line.startswith("#"))
    assert {"LVS_ETCD", "LVS_CLUSTER", "LVS_NODE", "LVS_HEARTBEAT_KEY_FILE",
            "PULSE_OPTS"} <= set(variables)
