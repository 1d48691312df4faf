"""Resume the connections a new active took over at once, not at their next timeout."""

from .flows import Flow, from_conntrack, from_ip_vs_conn
from .nudge import Resumer, ResumeStats
from .sources import synced_flows

__all__ = ["Flow", "ResumeStats", "Resumer", "from_conntrack", "from_ip_vs_conn",
           "synced_flows"]
