"""Follow the stored configuration: the last valid one stays in force.

Junk written under the config key (by hand with etcdctl, say) is logged and counted and
otherwise ignored; the running configuration only ever changes to a valid one.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from .documents import StoredConfig, StoredConfigError
from .etcd.client import KV, Etcd
from .etcd.watch import PrefixWatch, Snapshot
from .keys import Keys

log = logging.getLogger(__name__)

Listener = Callable[[StoredConfig], Awaitable[None] | None]


class ConfigFollower:
    """Watches ``/lvs/<cluster>/config`` and calls ``listener`` with each new valid config."""

    def __init__(self, etcd: Etcd, keys: Keys, listener: Listener | None = None) -> None:
        self.etcd = etcd
        self.keys = keys
        self.listener = listener
        self.current: StoredConfig | None = None
        self.errors = 0
        self.last_error: str | None = None
        self.updated = asyncio.Event()

    async def run(self) -> None:
        async for update in PrefixWatch(self.etcd, self.keys.config):
            if isinstance(update, Snapshot):
                kv = update.items.get(self.keys.config)
                if kv is not None:
                    await self.offer(kv)
            else:
                for change in update:
                    if change.key == self.keys.config and change.kv is not None:
                        await self.offer(change.kv)
                    elif change.key == self.keys.config:
                        log.warning("config key deleted; keeping serial_no %s in force",
                                    self.current.serial_no if self.current else None)

    async def offer(self, kv: KV) -> None:
        """A value of the config key was seen: adopt it if it is new and valid."""
        if self.current is not None and kv.mod_revision == self.current.revision:
            return
        try:
            stored = StoredConfig.from_kv(kv)
        except StoredConfigError as exc:
            self.errors += 1
            self.last_error = str(exc)
            log.error("ignoring invalid stored config (keeping serial_no %s): %s",
                      self.current.serial_no if self.current else None, exc)
            self.updated.set()
            return
        self.current = stored
        log.info("config serial_no %d in force (pushed %s by %s)",
                 stored.serial_no, stored.pushed_at, stored.pushed_by)
        if self.listener is not None:
            result = self.listener(stored)
            if inspect.isawaitable(result):
                await result
        self.updated.set()
