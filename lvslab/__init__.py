"""The local lab: a real cluster (etcd, routers, real servers, a client) on one machine,
each host in its own network namespace. See docs/lab.md.

    from lvslab import Lab
    with Lab("t1", "10.81.0.0/24", routers=2, agent_cmd=["sleep", "3600"]) as lab:
        lab.exec("client", "curl", "-s", f"http://{lab.vip}/")

The names below are imported on first use, so ``python -m lvslab.httpd`` (every real server)
starts without the config model and its parser (seconds under the QEMU guest).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lab import HostInfo, Lab, require_root
    from .netns import LabError
    from .topology import Topology

__all__ = ["HostInfo", "Lab", "LabError", "Topology", "require_root"]
_HOMES = {"HostInfo": "lab", "Lab": "lab", "require_root": "lab", "LabError": "netns",
          "Topology": "topology"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
