"""The licence writes of the fence as one raw nf_tables netlink batch, without libnftables.

libnftables reads the kernel's whole ruleset into its cache before a command that flushes a
set, and again whenever the ruleset's generation moved (every data-plane change does): with
the nftables data plane holding 40,000 real servers, that listing took 380 ms per licence
renewal, on the agent's event loop. The licence needs two fixed messages, so we send them
ourselves (docs/benchmarks.md, "VIP fence"):

    BATCH_BEGIN
    DELSETELEM <table> licensed4             (no elements: flush the set)
    DELSETELEM <table> licensed6
    NEWSETELEM <table> licensed4 {ip timeout ms, ...}   (if any)
    NEWSETELEM <table> licensed6 {ip timeout ms, ...}   (if any)
    BATCH_END

one atomic transaction, as ``nft -f`` would make it; every message asks for an ACK and the
first error fails the write. :func:`batch` is pure (tested byte for byte against what the
kernel accepts); :class:`NetlinkWriter` sends it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import ip_address

from agent.dataplane.nft import nfbatch
from agent.dataplane.nft.nfbatch import (
    ELEM_TIMEOUT,
    NFPROTO_NETDEV,
    NFT_MSG_DELSETELEM,
    NFT_MSG_NEWSETELEM,
)

Licence = tuple[str, Sequence[str]]  # (set name, addresses licensed in it)


def _element(address: str, ms: int) -> bytes:
    return nfbatch.element(ip_address(address).packed,
                           nfbatch.attr(ELEM_TIMEOUT, ms.to_bytes(8, "big")))


def messages(table: str, sets: Iterable[Licence], ms: int) -> list[nfbatch.Message]:
    """Flush each set, then add its addresses with a timeout of ``ms`` milliseconds (none
    if ``ms <= 0``)."""
    sets = list(sets)
    out = [nfbatch.elements_message(NFT_MSG_DELSETELEM, NFPROTO_NETDEV, table, name)
           for name, _ in sets]
    if ms > 0:
        out += [nfbatch.elements_message(NFT_MSG_NEWSETELEM, NFPROTO_NETDEV, table, name,
                                         [_element(a, ms) for a in sorted(addresses)])
                for name, addresses in sets if addresses]
    return out


def batch(table: str, sets: Iterable[Licence], ms: int, seq: int) -> tuple[bytes, list[int]]:
    """The licence batch (:func:`messages`) and the sequence numbers that must be ACKed."""
    return nfbatch.batch(messages(table, sets, ms), seq)


class NetlinkWriter(nfbatch.BatchWriter):
    """Sends licence batches on one NETLINK_NETFILTER socket of this network namespace."""

    def write(self, table: str, sets: Iterable[Licence], ms: int) -> str | None:
        """Carry out one licence batch; None on success, else the kernel's complaint.
        The generation its commit made is then :attr:`generation` (the kernel tells)."""
        return self.send(messages(table, sets, ms), echo=True)
