"""``config``: the validated configuration; ``history/config/<serial_no>``: who pushed what.

The config value carries the model (authoritative), its serial_no, the lvs.cf text it came
from, a digest, and who pushed it when. It is decoded *and validated*: a value that is not
a configuration the model accepts raises :class:`StoredConfigError`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..etcd.client import KV
from ..model import ConfigError, LvsConfig, config_from_json
from .base import Document, DocumentError, dumps

FORMAT = 1


class StoredConfigError(DocumentError):
    """The value under the config key is not a valid configuration."""


class ConfigEnvelope(Document):
    """The JSON shape of the config value; ``config`` is checked by the model."""

    WHAT = "config document"
    format: int = FORMAT
    """Version of this document's layout (1)."""
    serial_no: int | None = None
    """The config's serial_no (also in `config`)."""
    pushed_at: str = ""
    """When it was pushed (UTC)."""
    pushed_by: str = ""
    """Who pushed it (`user@host`)."""
    sha256: str = ""
    """Digest of the canonical JSON of `config`."""
    config: dict[str, Any]
    """The validated model (authoritative; see docs/lvs-cf.md)."""
    source: str = ""
    """The lvs.cf text as it was pushed."""

    def encode(self) -> str:
        return dumps(self.model_dump(mode="json"), indent=1)


@dataclass(frozen=True)
class StoredConfig:
    """The configuration as stored, validated."""

    config: LvsConfig
    source: str
    pushed_at: str
    pushed_by: str
    revision: int = 0  # mod_revision of the config key: changes on every push
    parts: frozenset[str] = frozenset()  # format 2: the digests of the parts it came from

    @property
    def serial_no(self) -> int:
        return self.config.serial_no

    def encode(self) -> str:
        model = self.config.model_dump(mode="json")
        return ConfigEnvelope(
            serial_no=self.config.serial_no, pushed_at=self.pushed_at,
            pushed_by=self.pushed_by, config=model, source=self.source,
            sha256=hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest(),
        ).encode()

    @classmethod
    def decode(cls, value: bytes | str, *, revision: int = 0) -> StoredConfig:
        """Parse and validate; StoredConfigError saying why not."""
        try:
            env = ConfigEnvelope.decode(value)
        except DocumentError as exc:
            raise StoredConfigError(str(exc)) from None
        if env.format != FORMAT:
            raise StoredConfigError(f"unknown format {env.format!r}")
        try:
            cfg = config_from_json(env.config)
        except ConfigError as exc:
            raise StoredConfigError(f"invalid config: {exc}") from None
        return cls(cfg, env.source, env.pushed_at, env.pushed_by, revision)

    @classmethod
    def from_kv(cls, kv: KV) -> StoredConfig:
        """:meth:`decode` of a key-value; the error names the key."""
        try:
            return cls.decode(kv.value, revision=kv.mod_revision)
        except StoredConfigError as exc:
            raise StoredConfigError(f"{kv.key}: {exc}") from None


class ConfigHistoryEntry(Document):
    """One past push: which serial_no, who, when, and what it changed."""

    WHAT = "config history entry"
    serial_no: int
    """The serial_no pushed."""
    pushed_at: str = ""
    """When (UTC)."""
    pushed_by: str = ""
    """Who (`user@host`)."""
    changes: tuple[str, ...] = ()
    """What changed from the config it replaced, one line each."""

    def encode(self) -> str:
        return dumps(self.model_dump(mode="json"), indent=1)
