"""libnftables in-process (ctypes): one transaction in ~0.2 ms instead of ~7 ms for `nft`.

The Debian `nftables` package ships libnftables.so.1, the library `nft` itself is built on;
its Python binding (python3-nftables) exists only for the system Python, so the few calls
we need are bound here. JSON in, JSON out, exactly as `nft -j`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from cluster.bulk import give_back

NFT_CTX_OUTPUT_JSON = 1 << 4

#: One nftables writer of this process at a time. libnftables reads the kernel's ruleset
#: (in our data plane's table: every set element) before it writes, and reads it again if
#: the ruleset's generation moved meanwhile: with 40,000 real servers that read takes
#: hundreds of ms, and the VIP fence, renewing its licence every quarter of the VIP
#: lifetime, kept moving it (libnftables retried for minutes). Every :class:`LibNft` call
#: holds this lock, and so do the fence's own netlink writes (agent/vip/fence.py).
WRITERS = threading.RLock()

#: A context that ran a command or gave an answer bigger than this is replaced after it.
#: libnftables keeps its cache of the ruleset (every set element it read) in the context
#: until the next command: about 70 MB after a transaction or a listing of 40,000 real
#: servers, held for as long as no other change comes (docs/benchmarks.md, "Memory").
#: A new context costs microseconds, and after a commit of ours the cache is stale anyway.
#: The C heap's free pages must then go back to the system (:meth:`LibNft.give_back`):
#: glibc kept the freed cache's pages, as the backup's extra 60-90 MB after the chains'
#: compaction showed.
RENEW_AFTER = 64 * 1024


class LibNft:
    """One libnftables context; calls are serialised (the context is not thread-safe)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._lock = threading.Lock()
        self._ctx = self._new()
        self.renewed = 0  # contexts replaced after a big command (RENEW_AFTER)
        self.unreturned = False  # a context was freed since the last give_back()

    def _new(self) -> int:
        lib = self._lib
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise OSError("nft_ctx_new failed")
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
        return ctx

    @classmethod
    def load(cls) -> LibNft | None:
        """The library, or None if it is not installed (the caller then runs `nft`)."""
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            return None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
            getattr(lib, fn).restype = ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        try:
            return cls(lib)
        except OSError:
            return None

    def run(self, command: str) -> tuple[int, str, str]:
        """(status, stdout, stderr) of one command buffer (text or JSON), like `nft -j -f -`."""
        data = command.encode()
        with self._lock, WRITERS:
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, data)
            out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
            err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
            if len(data) > RENEW_AFTER or len(out) > RENEW_AFTER:
                self._lib.nft_ctx_free(self._ctx)  # and its cache
                self._ctx = self._new()
                self.renewed += 1
                self.unreturned = True
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def give_back(self) -> bool:
        """Hand the C heap's free pages back (``malloc_trim``, 5-20 ms; blocking) if a
        context was freed since the last call; whether it did. Once after a step of
        several big commands, not after each: 12 trims on the chain of commits of a table
        from empty cost it about 0.1 s."""
        if not self.unreturned:
            return False
        self.unreturned = False
        give_back()
        return True

    def close(self) -> None:
        with self._lock:
            if self._ctx:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None
