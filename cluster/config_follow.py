"""Follow the stored configuration: the last valid one stays in force.

Junk written under the config key (by hand with etcdctl, say), and a config that cannot run
(:func:`cluster.lvscf.cannot_run`, e.g. pushed by an older lvsctl), are logged, counted and
reported to ``on_refused``, and otherwise ignored: the running configuration only ever
changes to one that can run.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from . import config_layout, lvscf
from .bulk import in_thread
from .documents import StoredConfig, StoredConfigError
from .etcd.client import KV, Etcd, EtcdAuthError, EtcdUnavailable
from .etcd.watch import PrefixWatch, Snapshot
from .keys import Keys

log = logging.getLogger(__name__)

Listener = Callable[[StoredConfig], Awaitable[None] | None]
Refused = Callable[[int | None, str], None]  # (serial_no if known, reason)


class ConfigFollower:
    """Watches ``/lvs/<cluster>/config`` and calls ``listener`` with each new config that can
    run; ``on_refused(serial_no, reason)`` with each one that cannot (or is junk)."""

    def __init__(self, etcd: Etcd, keys: Keys, listener: Listener | None = None,
                 on_refused: Refused | None = None,
                 parts: Mapping[str, bytes] | None = None) -> None:
        self.etcd = etcd
        self.keys = keys
        self.listener = listener
        self.on_refused = on_refused
        #: {digest: value} of the parts under ``config-parts/`` (format 2): a view's, kept
        #: up to date by it, else our own, kept by :meth:`run`.
        self.parts: Mapping[str, bytes] = parts if parts is not None else {}
        self._own_parts = parts is None
        self.current: StoredConfig | None = None
        self.errors = 0
        self.last_error: str | None = None
        self._refused_revision: int | None = None
        self.updated = asyncio.Event()

    async def run(self) -> None:
        """Follow the config key and its parts (the watch of prefix ``config`` sees both)."""
        assert self._own_parts, "a follower given a view's parts is fed by that view"
        parts: dict[str, bytes] = {}
        self.parts = parts
        prefix = self.keys.config_parts_prefix
        async for update in PrefixWatch(self.etcd, self.keys.config):
            if isinstance(update, Snapshot):
                parts.clear()
                parts.update({k[len(prefix):]: kv.value for k, kv in update.items.items()
                              if k.startswith(prefix)})
                kv = update.items.get(self.keys.config)
                if kv is not None:
                    await self.offer(kv)
                continue
            for change in update:
                if change.key.startswith(prefix):
                    if change.kv is None:
                        parts.pop(change.key[len(prefix):], None)
                    else:
                        parts[change.key[len(prefix):]] = change.kv.value
                elif change.key == self.keys.config and change.kv is not None:
                    await self.offer(change.kv)
                elif change.key == self.keys.config:
                    log.warning("config key deleted; keeping serial_no %s in force",
                                self.current.serial_no if self.current else None)

    async def offer(self, kv: KV) -> None:
        """A value of the config key was seen: adopt it if it is new and can run."""
        if self.current is not None and kv.mod_revision == self.current.revision:
            return
        if kv.mod_revision == self._refused_revision:
            return  # seen again (e.g. a new watch's snapshot): refused and counted once
        try:
            stored = await self._load(kv)
        except StoredConfigError as exc:
            self._refuse(kv, _serial_of(kv), "ignoring invalid stored config", str(exc))
            return
        # (off the event loop: at 100,000 real servers the check is tenths of a second)
        problems = await in_thread(lvscf.cannot_run, stored.config, source=stored.source)
        if problems:
            self._refuse(kv, stored.serial_no, f"stored config serial_no {stored.serial_no} "
                         "cannot run", "; ".join(map(str, problems)))
            return
        self.current = stored
        log.info("config serial_no %d in force (pushed %s by %s)",
                 stored.serial_no, stored.pushed_at, stored.pushed_by)
        if self.listener is not None:
            result = self.listener(stored)
            if inspect.isawaitable(result):
                await result
        self.updated.set()

    async def _load(self, kv: KV) -> StoredConfig:
        """The config in ``kv`` (a format-2 head: from the parts we hold; any missing, as
        after a watch that fell behind, are read from etcd once)."""
        head = config_layout.head_of(kv)
        if head is None:
            return StoredConfig.from_kv(kv)
        try:
            return await config_layout.load_async(kv, self.parts.get)
        except StoredConfigError as exc:
            if "missing" not in str(exc):
                raise
            missing = exc
        try:
            kvs, _ = await self.etcd.scan(self.keys.config_parts_prefix)
        except (EtcdUnavailable, EtcdAuthError) as exc:  # never fatal: refused, reported
            raise StoredConfigError(f"{missing}; reading them from etcd failed: {exc}") from None
        fresh = {k.key[len(self.keys.config_parts_prefix):]: k.value for k in kvs}
        return await config_layout.load_async(kv, fresh.get)

    def _refuse(self, kv: KV, serial_no: int | None, what: str, reason: str) -> None:
        self.errors += 1
        self.last_error = reason
        self._refused_revision = kv.mod_revision
        log.error("%s (keeping serial_no %s in force): %s", what,
                  self.current.serial_no if self.current else None, reason)
        if self.on_refused is not None:
            self.on_refused(serial_no, reason)
        self.updated.set()


def _serial_of(kv: KV) -> int | None:
    """The serial_no a junk config value claims, if it claims one."""
    try:
        doc = json.loads(kv.value)
        serial = doc.get("serial_no", doc.get("config", {}).get("serial_no"))
    except (ValueError, AttributeError):
        return None
    return serial if type(serial) is int and serial >= 0 else None
