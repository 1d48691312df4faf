"""Connection state sync for the nftables data plane: conntrackd run by the agent.

``config`` (pure): conntrackd.conf from lvs.cf. ``daemon``: the child process, supervised.
``sync``: what happens at each role transition. See docs/conntrack-sync.md.
"""

from .config import SyncConfigError, SyncSettings, render, settings
from .daemon import CommandResult, Conntrackd, DaemonStats
from .sync import ConntrackSync, SyncStats

__all__ = [
           "CommandResult",
           "ConntrackSync",
           "Conntrackd",
           "DaemonStats",
           "SyncConfigError",
           "SyncSettings",
           "SyncStats",
           "render",
           "settings",
]
