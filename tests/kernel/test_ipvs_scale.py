"""A thousand services with three real servers each, applied in one go and read back."""

from __future__ import annotations

import pytest

from agent.dataplane.ipvs import IpvsBackend
from agent.dataplane.table import DestKey, DestSpec, Service, ServiceKey, ServiceSpec, diff

pytestmark = pytest.mark.ipvs


def big_table(services: int, dests: int) -> dict[ServiceKey, Service]:
    return {
        ServiceKey("tcp", f"10.{i // 250}.{i % 250}.1", 80): Service(
            ServiceSpec("wrr"),
            {DestKey(f"10.200.{j}.{i % 250}", 80): DestSpec(1 + j, "masq") for j in range(dests)},
        )
        for i in range(services)
    }


async def test_thousand_services(backend: IpvsBackend, witness) -> None:
    want = big_table(1000, 3)
    await backend.apply(diff({}, want))
    have = await backend.read()
    assert len(have) == 1000
    assert have == want
    assert diff(have, want) == []
    lines = witness.run("ipvsadm -S -n").splitlines()
    assert sum(line.startswith("-A") for line in lines) == 1000
    assert sum(line.startswith("-a") for line in lines) == 3000
    await backend.apply(diff(have, {}))  # 1,000 deletions in one call
    assert await backend.read() == {}
