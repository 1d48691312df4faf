"""Is this router's connection table warm? The measure behind the preemption gate.

A preempting router takes the VIPs by a graceful switchover: every connection the active
carries must be in its kernel by then, or the connection's next packet meets a director
that does not know it and is reset. IPVS cannot pull state from the active; its master
sync daemon pushes a connection only when packets pass (at each state change, then at most
every ``sync_refresh_period``, which pulse sets from ``sync_warmup``). So a router counts
its table warm once its sync receiver (the backup daemon) has run for ``sync_warmup``
seconds (docs/protocol.md rule 7, docs/dataplane.md "Connection sync").

The role machine sees one number, :attr:`agent.role.World.conn_warm_at`. Each state sync
offers a :class:`Warmth`: :class:`SyncReceiver` for IPVS, ``ConntrackSync`` (nftables)
its own, and pulse takes the latest of them (:func:`warm_at`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from .backend import SyncState

INF = float("inf")

ReceiverState = Literal["unknown", "off", "master", "backup", "failed"]


class Warmth(Protocol):
    """One source of connection state for this router's kernel."""

    def warm_at(self) -> float:
        """Monotonic time from which the table counts as warm: -inf if it is (or this source
        syncs nothing), inf if that is not known (not started, failed)."""
        ...


@dataclass
class SyncReceiver:
    """The IPVS measure: warm ``warmup`` seconds after our backup sync daemon started.

    The data plane reports every change of the daemon it runs (:meth:`observe`), with the
    time it was made (monotonic). Before the first report the table is not known warm.
    """

    warmup: float = 10.0
    state: ReceiverState = "unknown"
    since: float = -INF  # when ``state`` began

    def observe(self, state: SyncState | None, now: float) -> None:
        """The sync daemon runs as ``state`` from ``now`` on (None: no connection sync)."""
        new: ReceiverState = "off" if state is None else state
        if new != self.state:
            self.state, self.since = new, now

    def failed(self, now: float) -> None:
        """The daemon could not be set: nothing is known to be received."""
        self.state, self.since = "failed", now

    def warm_at(self) -> float:
        if self.state in ("off", "master"):  # nothing to receive: never a reason to wait
            return -INF
        if self.state == "backup":
            return self.since + self.warmup
        return INF


def warm_at(sources: Iterable[Warmth]) -> float:
    """When every source counts the table warm (-inf with no source)."""
    return max((s.warm_at() for s in sources), default=-INF)
