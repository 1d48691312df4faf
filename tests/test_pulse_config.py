"""How a running pulse takes a new config (not started: no etcd, no kernel)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from agent.health import service as health_service
from cluster.model import LvsConfig


def config(serial: int, servers: int) -> LvsConfig:
    return LvsConfig(serial_no=serial, routers=[
        {"name": "r1", "address": "10.98.0.1"}, {"name": "r2", "address": "10.98.0.2"}],
        virtuals=[{
        "name": "web", "address": "10.0.0.100 eth0:1", "port": 80, "check": "none",
        "servers": [{"name": f"s{i}", "address": f"10.1.{i // 250}.{i % 250 + 1}"}
                    for i in range(servers)]}])


def test_a_big_config_reaches_the_data_plane_once_its_checks_are_all_set_up(
        monkeypatch: Any) -> None:
    """Its checks are set up in parts (configure_async): meanwhile the data plane keeps
    the previous config, still told of every health change, and takes the new one in
    one pass at the end, with every new server's health known."""
    from agent.pulse import AgentOptions, Pulse
    from cluster.etcd.settings import settings_from

    monkeypatch.setenv("LVS_HEARTBEAT_KEY", "k" * 32)
    monkeypatch.setattr(health_service, "CONFIGURE_CHUNK", 50)  # 40 parts, results between
    small, big = config(1, 3), config(2, 2000)
    seen: list[tuple[int, int]] = []  # (serial_no, servers checked) per update

    async def run() -> None:
        p = Pulse(AgentOptions(settings=settings_from("http://127.0.0.1:9"), cluster="c",
                               node="r1"))
        p.dataplane.update = lambda cfg, *a, **k: seen.append(  # type: ignore
            (cfg.serial_no, len(p.health.engine.snapshot())))
        assert p._adopt(small)
        p.health.configure(small)
        p.health.activate(1)  # its own checks decide: each result may change the plane
        p.plane_config = small
        p._router_started = True
        p._dataplane_update()
        async with p.health.engine:  # checks run, results come back as they would
            await p._on_config(SimpleNamespace(config=big, source=None))  # type: ignore
            await asyncio.sleep(0.2)

    asyncio.run(run())
    firsts = [n for n, (serial, _) in enumerate(seen) if serial == 2]
    assert firsts, "the data plane never got the new config"
    assert seen[:firsts[0]] and all(serial == 1 for serial, _ in seen[:firsts[0]])
    assert seen[firsts[0]][1] == len(big.virtuals[0].servers)  # all checked by then
    assert any(0 < checked < len(big.virtuals[0].servers) for _, checked in seen), \
        "the checks were not set up in parts (the test proves nothing)"


if __name__ == "__main__":
    pytest.main([__file__])
