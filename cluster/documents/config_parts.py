"""``config`` (format 2) and ``config-parts/<digest>``: a configuration of any size.

The head under ``config`` is small: serial_no, who pushed it when, a digest of the whole
model, the global settings, and the digests of the parts that hold the rest. A part holds
one virtual service (with its real servers, or with the digests of parts holding them when
there are too many for one value), a chunk of the list of virtuals (the manifest), or a
chunk of the lvs.cf text. A part's key is the digest of its value: a value that does not
hash to its key is damage, never a config. cluster/config_layout.py splits and assembles.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from .base import Document, dumps

FORMAT = 2
DIGEST_CHARS = 32  # 128 bits of SHA-256, hex


def digest(value: bytes | str) -> str:
    """The key name of a part whose value is ``value``."""
    data = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]


def canonical(data: Any) -> str:
    """One JSON text per value (sorted keys, compact), so equal parts share a digest."""
    return dumps(data, sort_keys=True, compact=True)


class ConfigHead(Document):
    """The head of a stored configuration (format 2): what is in force is what it names."""

    WHAT = "config head"
    format: Literal[2]
    """Version of this document's layout (2: split into parts; 1: one value)."""
    serial_no: int
    """The config's serial_no."""
    pushed_at: str = ""
    """When it was pushed (UTC)."""
    pushed_by: str = ""
    """Who pushed it (`user@host`)."""
    sha256: str
    """Digest of the canonical JSON of the whole model (checked after assembly)."""
    globals: dict[str, Any]
    """The model less its virtuals: global settings, routers, failovers."""
    manifest: tuple[str, ...]
    """Digests of the manifest parts: the virtuals in order, with their parts' digests."""
    source: tuple[str, ...] = ()
    """Digests of the parts holding the lvs.cf text as it was pushed, in order."""
    virtuals: int = 0
    """How many virtual services (for people reading it)."""
    servers: int = 0
    """How many real servers."""
    parts: int = 0
    """How many parts it names, all kinds."""
    bytes: int = 0
    """Their total size."""

    def encode(self) -> str:
        return dumps(self.model_dump(mode="json"), indent=1)


class ConfigPart(Document):
    """One part: a virtual service, a chunk of its real servers, of the manifest or of the
    lvs.cf text (``kind`` says which; the other fields are empty)."""

    WHAT = "config part"
    kind: Literal["virtual", "servers", "manifest", "source"]
    """What the part holds."""
    virtual: dict[str, Any] | None = None
    """virtual: the virtual service as the model holds it, less `servers`."""
    servers: tuple[dict[str, Any], ...] = ()
    """virtual, servers: real servers, in order."""
    server_parts: tuple[str, ...] = ()
    """virtual: digests of `servers` parts holding the rest of its real servers, in order."""
    entries: tuple[tuple[str, str], ...] = ()
    """manifest: (virtual name, digest of its part), in config order."""
    text: str = ""
    """source: a chunk of the lvs.cf text."""

    def encode(self) -> str:
        data = self.model_dump(mode="json", exclude_defaults=True)
        data["kind"] = self.kind
        return canonical(data)
