"""The cluster's configuration in etcd: validated, atomic, never older than what is there.

The ``config`` key holds JSON: the validated model, its serial_no, the lvs.cf text it came
from and who pushed it when. Every push also leaves ``history/config/<serial>``.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import lvscf
from .config_diff import changes
from .etcd.client import KV, Etcd, compare_mod_revision
from .keys import Keys
from .model import ConfigError, LvsConfig, config_from_json

FORMAT = 1
HISTORY_KEEP = 100


class StoredConfigError(Exception):
    """The value under the config key is not a valid configuration."""


class PushRefused(Exception):
    """A push was refused (older serial_no, or a concurrent push)."""


@dataclass(frozen=True)
class StoredConfig:
    config: LvsConfig
    source: str
    pushed_at: str
    pushed_by: str
    revision: int  # mod_revision of the config key: changes on every push

    @property
    def serial_no(self) -> int:
        return self.config.serial_no


@dataclass(frozen=True)
class PushResult:
    previous: StoredConfig | None
    stored: StoredConfig
    changes: list[str]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def encode_config(cfg: LvsConfig, source: str, *, pushed_at: str, pushed_by: str) -> bytes:
    model = cfg.model_dump(mode="json")
    doc = {
        "format": FORMAT,
        "serial_no": cfg.serial_no,
        "pushed_at": pushed_at,
        "pushed_by": pushed_by,
        "sha256": hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest(),
        "config": model,
        "source": source,
    }
    return json.dumps(doc, indent=1).encode()


def decode_config(kv: KV) -> StoredConfig:
    """Parse and validate a stored config value; raise StoredConfigError saying why not."""
    try:
        doc: Any = json.loads(kv.value)
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoredConfigError(f"{kv.key}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise StoredConfigError(f"{kv.key}: not a config document (no 'config' object)")
    if doc.get("format", FORMAT) != FORMAT:
        raise StoredConfigError(f"{kv.key}: unknown format {doc.get('format')!r}")
    try:
        cfg = config_from_json(doc["config"])
    except ConfigError as exc:
        raise StoredConfigError(f"{kv.key}: invalid config: {exc}") from None
    return StoredConfig(
        config=cfg,
        source=str(doc.get("source", "")),
        pushed_at=str(doc.get("pushed_at", "")),
        pushed_by=str(doc.get("pushed_by", "")),
        revision=kv.mod_revision,
    )


class ConfigStore:
    """Read and write the cluster's configuration."""

    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys

    async def load(self) -> StoredConfig | None:
        """The stored config, None if there is none; StoredConfigError if it is junk."""
        kv = await self.etcd.get(self.keys.config)
        return decode_config(kv) if kv is not None else None

    async def push(
        self, cfg: LvsConfig, source: str, *, force: bool = False, by: str | None = None
    ) -> PushResult:
        """Store ``cfg`` atomically unless a config with the same or newer serial_no is there.

        A config that cannot run (:func:`cluster.lvscf.cannot_run`) raises ConfigError.

        The write is a transaction on the config key's revision as read, so two concurrent
        pushes cannot both win. A junk value in etcd may always be replaced.
        """
        problems = lvscf.cannot_run(cfg, source=source)
        if problems:  # what cannot run is never stored
            raise ConfigError(problems)
        kv = await self.etcd.get(self.keys.config)
        previous: StoredConfig | None = None
        if kv is not None:
            try:
                previous = decode_config(kv)
            except StoredConfigError:
                previous = None  # junk may be overwritten
        if previous is not None and not force and cfg.serial_no <= previous.serial_no:
            raise PushRefused(
                f"serial_no {cfg.serial_no} is not newer than the stored {previous.serial_no} "
                f"(pushed {previous.pushed_at} by {previous.pushed_by}); "
                "raise serial_no or use --force"
            )
        pushed_at, pushed_by = now_iso(), by or who()
        value = encode_config(cfg, source, pushed_at=pushed_at, pushed_by=pushed_by)
        diff = changes(previous.config if previous else None, cfg)
        history = json.dumps({"serial_no": cfg.serial_no, "pushed_at": pushed_at,
                              "pushed_by": pushed_by, "changes": diff}, indent=1)
        kvs = self.etcd.kv
        guard = (kvs.txn_compare_create_revision(self.keys.config, 0) if kv is None
                 else compare_mod_revision(self.keys.config, kv.mod_revision))
        result = await self.etcd.txn(
            [guard],
            [kvs.txn_op_put(self.keys.config, value),
             kvs.txn_op_put(self.keys.config_history(cfg.serial_no), history)],
        )
        if not result.succeeded:
            raise PushRefused("the stored config changed while pushing (concurrent push); retry")
        await self._trim_history()
        stored = StoredConfig(cfg, source, pushed_at, pushed_by, result.revision)
        return PushResult(previous, stored, diff)

    async def history(self) -> list[dict[str, Any]]:
        """Past pushes, oldest first (entries that are not JSON objects are skipped)."""
        kvs, _ = await self.etcd.get_prefix(self.keys.config_history_prefix)
        out = []
        for kv in kvs:
            try:
                doc = json.loads(kv.value)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out

    async def _trim_history(self) -> None:
        kvs, _ = await self.etcd.get_prefix(self.keys.config_history_prefix)
        for kv in kvs[:-HISTORY_KEEP] if len(kvs) > HISTORY_KEEP else []:
            await self.etcd.delete(kv.key)

