"""The IPVS data plane: the kernel's virtual server table over generic netlink."""

from .backend import (
    ApplyError,
    IpvsBackend,
    IpvsError,
    IpvsUnavailable,
    SyncDaemon,
    Timeouts,
    available,
)

__all__ = ["ApplyError", "IpvsBackend", "IpvsError", "IpvsUnavailable", "SyncDaemon",
           "Timeouts", "available"]
