"""The cluster's configuration in etcd: validated, atomic, never older than what is there.

The ``config`` key holds the head of the configuration (format 2): its serial_no, who
pushed it when, and the digests of the parts under ``config-parts/`` that hold the model
and the lvs.cf text it came from (cluster.config_layout). A push writes the parts the
current head does not name, in transactions of at most :data:`BATCH_OPS` values and
:data:`BATCH_BYTES`, then switches the head in one last transaction guarded by the head
it read: readers see the old config or the new one, never a mix. A config of format 1 (the
whole of it in the one value) is still read. Every push also leaves a
:class:`~cluster.documents.ConfigHistoryEntry` under ``history/config/<serial>``, and
creates the cluster's hash seed if it has none (cluster.seed).
"""

from __future__ import annotations

import getpass
import socket
import time
from dataclasses import dataclass, replace

from . import config_layout, lvscf
from .config_diff import changes
from .documents import (
    ConfigHistoryEntry,
    DocumentError,
    StoredConfig,
    StoredConfigError,
    now_iso,
)
from .etcd.client import KV, CreateRevision, Etcd, ModRevision, Put
from .history import RETENTION, prune
from .keys import Keys
from .model import ConfigError, LvsConfig
from .seed import SeedState, ensure_seed

__all__ = ["ConfigStore", "PushRefused", "PushResult", "StoredConfig", "StoredConfigError",
           "now_iso", "who"]

HISTORY_KEEP = RETENTION["config"].keep
HISTORY_CHANGES = 500  # lines of changes a history entry keeps (it shares the head's txn)
BATCH_OPS = 64  # values per transaction of a push (etcd's default limit: 128 operations)
BATCH_BYTES = 1024 * 1024  # bytes per transaction (etcd's default request limit: 1.5 MiB)


class PushRefused(Exception):
    """A push was refused (older serial_no, or a concurrent push)."""


@dataclass(frozen=True)
class PushResult:
    previous: StoredConfig | None
    stored: StoredConfig
    changes: list[str]
    seed: SeedState | None = None  # the cluster's hash seed after the push
    seed_created: bool = False  # this push created it (the cluster had none)
    written: tuple[int, int] = (0, 0)  # parts written (the others were there) and bytes


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class ConfigStore:
    """Read and write the cluster's configuration."""

    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys

    async def load(self) -> StoredConfig | None:
        """The stored config, None if there is none; StoredConfigError if it is junk."""
        kv = await self.etcd.get(self.keys.config)
        return await self._decode(kv) if kv is not None else None

    async def _decode(self, kv: KV) -> StoredConfig:
        if config_layout.head_of(kv) is None:
            return StoredConfig.from_kv(kv)
        kvs, _ = await self.etcd.scan(self.keys.config_parts_prefix)
        parts = {kv.key[len(self.keys.config_parts_prefix):]: kv.value for kv in kvs}
        return config_layout.load(kv, parts.get)

    async def push(
        self, cfg: LvsConfig, source: str, *, force: bool = False, by: str | None = None,
        checked: bool = False,
    ) -> PushResult:
        """Store ``cfg`` atomically unless a config with the same or newer serial_no is there.

        A config that cannot run (:func:`cluster.lvscf.cannot_run`) raises ConfigError;
        ``checked``: the caller found that it can (``parse(..., runnable=True)``), and it
        is not checked again (a second of Python at 40,000 real servers).

        The write is a transaction on the config key's revision as read, so two concurrent
        pushes cannot both win. A junk value in etcd may always be replaced.
        """
        problems = [] if checked else lvscf.cannot_run(cfg, source=source)
        if problems:  # what cannot run is never stored
            raise ConfigError(problems)
        kv = await self.etcd.get(self.keys.config)
        previous: StoredConfig | None = None
        if kv is not None:
            try:
                previous = await self._decode(kv)
            except StoredConfigError:
                previous = None  # junk may be overwritten
        if previous is not None and not force and cfg.serial_no <= previous.serial_no:
            raise PushRefused(
                f"serial_no {cfg.serial_no} is not newer than the stored {previous.serial_no} "
                f"(pushed {previous.pushed_at} by {previous.pushed_by}); "
                "raise serial_no or use --force"
            )
        pushed_at, pushed_by = now_iso(), by or who()
        stored = StoredConfig(cfg, source, pushed_at, pushed_by)
        diff = changes(previous.config if previous else None, cfg)
        kept = diff if len(diff) <= HISTORY_CHANGES else [
            *diff[:HISTORY_CHANGES - 1],
            f"... and {len(diff) - HISTORY_CHANGES + 1:,} more changes (lvsctl config diff)"]
        history = ConfigHistoryEntry(serial_no=cfg.serial_no, pushed_at=pushed_at,
                                     pushed_by=pushed_by, changes=tuple(kept))
        layout = config_layout.split(stored)
        named = previous.parts if previous is not None else frozenset()
        new_parts = {d: v for d, v in layout.parts.items() if d not in named}
        await self._write_parts(new_parts)
        written = (len(new_parts), sum(len(v.encode()) for v in new_parts.values()))
        guard = (CreateRevision(self.keys.config, 0) if kv is None
                 else ModRevision(self.keys.config, kv.mod_revision))
        result = await self.etcd.txn(
            [guard],
            [Put(self.keys.config, layout.head.encode()),
             Put(self.keys.config_history(cfg.serial_no), history.encode())],
        )
        if not result.succeeded:
            raise PushRefused("the stored config changed while pushing (concurrent push); retry")
        await self._trim_history()
        seed, created = await ensure_seed(self.etcd, self.keys, f"{pushed_by} (config push)")
        return PushResult(previous, replace(stored, revision=result.revision,
                                            parts=frozenset(layout.parts)), diff, seed,
                          created, written)

    async def _write_parts(self, parts: dict[str, str]) -> None:
        """Put ``parts`` in bounded transactions. Invisible until a head names them; a part
        named by no head is removed once every router runs a newer config (config_gc)."""
        batch: list[Put] = []
        size = 0
        for d, value in sorted(parts.items()):
            n = len(value.encode())
            if batch and (len(batch) >= BATCH_OPS or size + n > BATCH_BYTES):
                await self.etcd.txn([], batch)
                batch, size = [], 0
            batch.append(Put(self.keys.config_part(d), value))
            size += n
        if batch:
            await self.etcd.txn([], batch)

    async def history(self) -> list[ConfigHistoryEntry]:
        """Past pushes, oldest first (entries that do not decode are skipped)."""
        kvs, _ = await self.etcd.get_prefix(self.keys.config_history_prefix)
        out = []
        for kv in kvs:
            try:
                out.append(ConfigHistoryEntry.decode(kv.value))
            except DocumentError:
                continue
        return out

    async def _trim_history(self) -> None:
        """The oldest pushes past the last :data:`HISTORY_KEEP` go (a few per push)."""
        await prune(self.etcd, self.keys, "config", now=time.time())

