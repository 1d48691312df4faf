"""The nftables data plane, for kernels without IPVS: one table of our own, programmed
in place through libnftables."""

from .backend import NftBackend, NftError, available
from .layout import NftInputError

__all__ = ["NftBackend", "NftError", "NftInputError", "available"]
