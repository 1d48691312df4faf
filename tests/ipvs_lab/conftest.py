"""The IPVS lab tests run where the kernel has IPVS: inside the QEMU guest that
scripts/ipvs_vm.py boots (``make test`` does, once). Elsewhere they are skipped."""

from __future__ import annotations

import pytest

from agent.dataplane import ipvs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ipvs.available():
        return
    skip = pytest.mark.skip(reason="this kernel has no IPVS (run scripts/ipvs_vm.py)")
    for item in items:
        if "ipvs" in item.keywords:
            item.add_marker(skip)
