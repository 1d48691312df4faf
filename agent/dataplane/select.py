"""Pick the data-plane backend: IPVS where the kernel has it, else nftables."""

from __future__ import annotations

import logging
from typing import Literal

from .backend import Backend

log = logging.getLogger(__name__)

BackendKind = Literal["auto", "ipvs", "nftables"]
KINDS: tuple[str, ...] = ("auto", "ipvs", "nftables")


class BackendUnavailable(RuntimeError):
    """The backend asked for cannot run here; the message says why and what to do."""


def _ipvs_available() -> bool:
    from agent.dataplane import ipvs

    return ipvs.available()


def _nft_available() -> bool:
    from agent.dataplane import nft

    return nft.available()


def choose_backend(
    kind: BackendKind | str = "auto", *, netns: str | None = None, full_nat: bool = False
) -> Backend:
    """A backend (``IpvsBackend`` or ``NftBackend``) for ``kind``.

    auto: IPVS when the kernel has it (and ``full_nat`` is off: only the nftables backend
    masquerades), else nftables. An explicit choice that cannot work here is a
    :class:`BackendUnavailable` error; an unknown ``kind`` a ValueError.
    """
    if kind not in KINDS:
        raise ValueError(f"data plane must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "ipvs" and full_nat:
        raise BackendUnavailable("full_nat needs the nftables data plane (IPVS does not "
                                 "masquerade by itself); choose nftables or auto")
    if kind in ("auto", "ipvs"):
        if not full_nat and _ipvs_available():
            return _ipvs(netns, "chosen" if kind == "ipvs" else "the kernel has IPVS")
        if kind == "ipvs":
            raise BackendUnavailable("data plane ipvs: this kernel has no IPVS (no "
                                     "/proc/net/ip_vs, no IPVS netlink family); run "
                                     "'modprobe ip_vs' or choose nftables")
    if not _nft_available():
        why = "IPVS not available, and " if kind == "auto" else ""
        raise BackendUnavailable(f"data plane {kind}: {why}nftables not usable ('nft list "
                                 "tables' failed: nft missing or no CAP_NET_ADMIN)")
    if kind == "nftables":
        reason = "chosen"
    elif full_nat:
        reason = "full_nat needs it"
    else:
        reason = "this kernel has no IPVS"
    from agent.dataplane.nft import NftBackend

    log.info("data plane: nftables (%s)", reason)
    return NftBackend(netns=netns, full_nat=full_nat)


def _ipvs(netns: str | None, reason: str) -> Backend:
    from agent.dataplane.ipvs import IpvsBackend

    log.info("data plane: IPVS (%s)", reason)
    return IpvsBackend(netns=netns)
