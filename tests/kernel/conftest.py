"""Fixtures for tests against a real IPVS kernel (run inside the QEMU guest).

Every test gets its own network namespace, so its IPVS table, timeouts and sync daemons
start empty and the host's own IPVS state (on a machine that has one) is never touched.
"""

from __future__ import annotations

import itertools
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.dataplane import ipvs
from agent.dataplane.table import DestKey, DestSpec, Service, ServiceKey, ServiceSpec

PREFIX = "pe-ipvs-"
RUN = f"{PREFIX}{os.getpid()}-"
_names = itertools.count()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ipvs.available():
        return
    skip = pytest.mark.skip(reason="this kernel has no IPVS (run scripts/ipvs_vm.py)")
    for item in items:
        if "ipvs" in item.keywords:
            item.add_marker(skip)


def _alive(pid: str) -> bool:
    return pid.isdigit() and Path(f"/proc/{pid}").exists()


@pytest.fixture(scope="session")
def _stale_namespaces_removed() -> None:
    """Remove namespaces left by killed runs (their pid is gone)."""
    for path in Path("/run/netns").glob(f"{PREFIX}*"):
        if not _alive(path.name[len(PREFIX):].split("-")[0]):
            subprocess.run(["ip", "netns", "del", path.name], check=False)


@pytest.fixture
def netns(_stale_namespaces_removed: None) -> Iterator[str]:
    name = f"{RUN}{next(_names)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # IPVS refuses real servers while the namespace has no local routing table yet
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def backend(netns: str) -> Iterator[ipvs.IpvsBackend]:
    b = ipvs.IpvsBackend(netns=netns)
    try:
        yield b
    finally:
        b.close()


class Witness:
    """ipvsadm (and other tools) run in a test's namespace: the kernel's independent witness."""

    def __init__(self, netns: str) -> None:
        self.netns = netns

    def run(self, command: str) -> str:
        """Run a shell command inside the namespace; return its stdout (fails loudly)."""
        done = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.netns}", "sh", "-c", command],
            capture_output=True, text=True, check=False,
        )
        assert done.returncode == 0, f"{command}: {done.stderr}"
        return done.stdout

    def table(self) -> dict[ServiceKey, Service]:
        """What the kernel holds, according to ipvsadm."""
        return parse_ipvsadm_save(self.run("ipvsadm -S -n"))


@pytest.fixture
def witness(netns: str) -> Witness:
    return Witness(netns)


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


_VALUED = {"-t", "-u", "-f", "-s", "-p", "-M", "-r", "-w", "-x", "-y", "-b",
           "--tun-type", "--tun-port", "--pe"}
_FORWARDS = {"-m": "masq", "-g": "route", "-i": "tunnel"}


def _options(line: str) -> tuple[dict[str, str], set[str]]:
    """One ``ipvsadm -S`` line as {option: value} and the set of bare flags."""
    words = shlex.split(line)
    opts: dict[str, str] = {}
    flags: set[str] = set()
    i = 0
    while i < len(words):
        if words[i] in _VALUED:
            opts[words[i]] = words[i + 1]
            i += 2
        else:
            flags.add(words[i])
            i += 1
    return opts, flags


def _service_key(opts: dict[str, str], flags: set[str]) -> ServiceKey:
    if "-f" in opts:
        return ServiceKey("fwmark", "", 0, int(opts["-f"]), 6 if "-6" in flags else 4)
    proto = "tcp" if "-t" in opts else "udp"
    host, port = _endpoint(opts.get("-t") or opts["-u"])
    return ServiceKey(proto, host, port, 0, 6 if ":" in host else 4)


def parse_ipvsadm_save(text: str) -> dict[ServiceKey, Service]:
    """``ipvsadm -S -n`` output as table values.

    ipvsadm prints a netmask only for persistent services, so others get the default.
    """
    table: dict[ServiceKey, Service] = {}
    for line in text.splitlines():
        opts, flags = _options(line)
        key = _service_key(opts, flags)
        if "-A" in flags:
            default = "128" if key.family == 6 else "255.255.255.255"
            spec = ServiceSpec(opts["-s"], int(opts.get("-p", 0)), opts.get("-M", default))
            table[key] = Service(spec, {})
        else:
            host, port = _endpoint(opts["-r"])
            forward = next(_FORWARDS[f] for f in flags if f in _FORWARDS)
            dests = {**table[key].dests, DestKey(host, port): DestSpec(int(opts["-w"]), forward)}
            table[key] = Service(table[key].spec, dests)
    return table
