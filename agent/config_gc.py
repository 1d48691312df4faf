"""Remove the config parts no head names, once every router runs the head's config.

Run by the active router only. :func:`collectable` decides (pure); :class:`PartCollector`
deletes in transactions of at most :data:`BATCH` parts, each guarded by the head's revision
and by each part's as seen, so that a push in progress (it writes, or rewrites, every part
it needs that the current head does not name, before it switches the head) never loses a
part: its writes change the revisions and the transaction does nothing. docs/etcd-layout.md,
``config-parts/<digest>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cluster.documents import ClusterState, StoredConfig
from cluster.etcd.client import Delete, Etcd, EtcdAuthError, EtcdUnavailable, ModRevision
from cluster.keys import Keys

log = logging.getLogger(__name__)

BATCH = 50  # parts per transaction: 51 guards and 50 deletes (etcd's default limit: 128)
PERIOD = 5.0  # seconds between two looks


def collectable(state: ClusterState, current: StoredConfig | None) -> list[tuple[str, int]]:
    """(digest, mod_revision) of every part that may go: ``current`` is the config of the
    head in ``state`` (format 2), every router that runs reports running it, and the part is
    named by it not and was last written before its head."""
    head = state.config_kv
    if head is None or current is None or current.revision != head.mod_revision \
            or not current.parts:
        return []
    if any(n.role != "starting" and n.config_serial != current.serial_no
           for n in state.nodes.values()):
        return []
    return sorted((d, rev) for d, rev in state.config_part_revisions.items()
                  if d not in current.parts and rev < head.mod_revision)


class PartCollector:
    """Every :data:`PERIOD` while ``active()``: delete what :func:`collectable` allows."""

    def __init__(self, etcd: Etcd, keys: Keys, state: Callable[[], ClusterState],
                 current: Callable[[], StoredConfig | None],
                 active: Callable[[], bool]) -> None:
        self.etcd, self.keys = etcd, keys
        self.state, self.current, self.active = state, current, active
        self.removed = 0
        self.denied = 0  # passes etcd refused (the router's role may not delete parts)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PERIOD)
            if self.active():
                try:
                    await self.collect()
                except EtcdUnavailable as exc:
                    log.debug("config parts: not removed now: %s", exc)
                except EtcdAuthError as exc:  # a role without config-parts/ (docs/security.md)
                    if not self.denied:
                        log.warning("config parts: not allowed to remove old ones (%s); "
                                    "they stay until an operator does", exc)
                    self.denied += 1

    async def collect(self) -> int:
        """One pass; how many parts went."""
        state = self.state()
        head = state.config_kv
        gone = collectable(state, self.current())
        if head is None or not gone:
            return 0
        removed = 0
        for i in range(0, len(gone), BATCH):
            batch = gone[i:i + BATCH]
            guards = [ModRevision(self.keys.config, head.mod_revision),
                      *(ModRevision(self.keys.config_part(d), rev) for d, rev in batch)]
            result = await self.etcd.txn(guards, [Delete(self.keys.config_part(d))
                                                  for d, _ in batch])
            if result.succeeded:  # else a push is under way, or the view is behind: the
                removed += len(batch)  # batch goes next time (as the view then has it)
        if removed:
            self.removed += removed
            log.info("config parts: removed %d that no head names (every router runs "
                     "serial_no %d)", removed, self.current().serial_no)  # type: ignore[union-attr]
        return removed
