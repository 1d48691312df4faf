"""The local lab: a real cluster (etcd, routers, real servers, a client) on one machine,
each host in its own network namespace. See docs/lab.md.

    from lvslab import Lab
    with Lab("t1", "10.81.0.0/24", routers=2, agent_cmd=["sleep", "3600"]) as lab:
        lab.exec("client", "curl", "-s", f"http://{lab.vip}/")
"""

from .lab import HostInfo, Lab, require_root
from .netns import LabError
from .topology import Topology

__all__ = ["HostInfo", "Lab", "LabError", "Topology", "require_root"]
