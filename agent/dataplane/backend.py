"""What every data-plane backend (IPVS, nftables) offers: one protocol, no duck typing.

The reconciler reads and applies through it; the data-plane service sets the kernel-wide
settings through it. A backend that has no such setting (nftables has no IPVS timeouts or
sync daemon) accepts the call and does nothing, saying so in its docstring.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Literal, Protocol

from .table import Op, Table

SyncState = Literal["master", "backup"]


class Backend(Protocol):
    """A data plane in the kernel: its virtual service table and kernel-wide settings."""

    name: str

    def programmable(self, table: Table) -> Table:
        """``table`` as this backend programs and reads it back: settings its kernel has no
        place for are dropped (IPVS: the Maglev inputs; its mh has its own). The data plane
        hands the reconciler this, so that a read of the kernel can equal it."""
        ...

    async def read(self) -> Table:
        """The virtual services the kernel holds now."""
        ...

    async def apply(self, ops: Sequence[Op]) -> None:
        """Carry out ``ops`` (raise on kernel refusal; the caller reads the kernel again)."""
        ...

    async def flush(self) -> None:
        """Delete every virtual service."""
        ...

    async def set_timeouts(self, tcp: int | None, tcpfin: int | None, udp: int | None) -> None:
        """Connection timeouts in seconds; None leaves one unchanged."""
        ...

    async def sync_daemon(self, state: SyncState | None, iface: str, syncid: int) -> None:
        """Run exactly this connection-sync daemon (None: none)."""
        ...

    def midstream_sysctls(self, protocols: Collection[str]) -> dict[str, str]:
        """The sysctls (name -> value) that make this kernel take up connections of
        ``protocols`` ("tcp", "udp", "sctp") it never saw, from their mid-stream packets: a
        new active must, for stateless schedulers (mh, sh). Pure; empty if none needed."""
        ...

    async def set_sysctls(self, wanted: Mapping[str, str]) -> dict[str, str]:
        """Set these sysctls in the backend's namespace where they differ; returns {name:
        value it had} for those it changed (OSError if one cannot be read or written)."""

    async def sync_refresh(self, period: int) -> None:
        """Sync each connection at its state changes and at most every ``period`` s."""
        ...

    def close(self) -> None:
        """Release sockets and background work."""
        ...
