"""The cluster's configuration in etcd: validated, atomic, never older than what is there.

The ``config`` key holds the :class:`~cluster.documents.StoredConfig` document: the validated
model, its serial_no, the lvs.cf text it came from and who pushed it when. Every push also
leaves a :class:`~cluster.documents.ConfigHistoryEntry` under ``history/config/<serial>``,
and creates the cluster's hash seed if it has none (cluster.seed).
"""

from __future__ import annotations

import getpass
import socket
import time
from dataclasses import dataclass, replace

from . import lvscf
from .config_diff import changes
from .documents import (
    ConfigHistoryEntry,
    DocumentError,
    StoredConfig,
    StoredConfigError,
    now_iso,
)
from .etcd.client import CreateRevision, Etcd, ModRevision, Put
from .history import RETENTION, prune
from .keys import Keys
from .model import ConfigError, LvsConfig
from .seed import SeedState, ensure_seed

__all__ = ["ConfigStore", "PushRefused", "PushResult", "StoredConfig", "StoredConfigError",
           "now_iso", "who"]

HISTORY_KEEP = RETENTION["config"].keep


class PushRefused(Exception):
    """A push was refused (older serial_no, or a concurrent push)."""


@dataclass(frozen=True)
class PushResult:
    previous: StoredConfig | None
    stored: StoredConfig
    changes: list[str]
    seed: SeedState | None = None  # the cluster's hash seed after the push
    seed_created: bool = False  # this push created it (the cluster had none)


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
        return StoredConfig.from_kv(kv) if kv is not None else None

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
                previous = StoredConfig.from_kv(kv)
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
        history = ConfigHistoryEntry(serial_no=cfg.serial_no, pushed_at=pushed_at,
                                     pushed_by=pushed_by, changes=tuple(diff))
        guard = (CreateRevision(self.keys.config, 0) if kv is None
                 else ModRevision(self.keys.config, kv.mod_revision))
        result = await self.etcd.txn(
            [guard],
            [Put(self.keys.config, stored.encode()),
             Put(self.keys.config_history(cfg.serial_no), history.encode())],
        )
        if not result.succeeded:
            raise PushRefused("the stored config changed while pushing (concurrent push); retry")
        await self._trim_history()
        seed, created = await ensure_seed(self.etcd, self.keys, f"{pushed_by} (config push)")
        return PushResult(previous, replace(stored, revision=result.revision), diff, seed,
                          created)

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

