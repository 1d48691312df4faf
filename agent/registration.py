"""``nodes/<node>``: this router's registration, bound to its lease (gone when we are)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from cluster.documents import NodeRecord
from cluster.etcd.client import Etcd, EtcdAuthError, EtcdUnavailable
from cluster.etcd.lease import LeaseKeeper
from cluster.keys import Keys

log = logging.getLogger(__name__)


class Registration:
    """Keeps ``nodes/<node>`` = ``doc()`` on our current lease; re-written on :meth:`kick`."""

    def __init__(self, etcd: Etcd, keys: Keys, node: str,
                 doc: Callable[[], NodeRecord],
                 on_written: Callable[[NodeRecord], None] | None = None) -> None:
        self.etcd, self.keys, self.node, self.doc = etcd, keys, node, doc
        self.on_written = on_written  # called with each document etcd now holds
        self._kick = asyncio.Event()
        self.writes = 0

    def kick(self) -> None:
        self._kick.set()

    async def run(self, lease: Callable[[], LeaseKeeper | None]) -> None:
        """Until cancelled; ``lease()``: the agent's lease keeper now (it may be replaced)."""
        written: tuple[int, str] | None = None
        key = self.keys.node(self.node)
        while True:
            self._kick.clear()
            doc = self.doc()
            value = doc.encode()
            keeper = lease()
            lease_id = keeper.lease_id if keeper is not None else None
            if lease_id is not None and written != (lease_id, value):
                try:
                    if written is None or written[0] != lease_id:
                        await self._check_duplicate(key, lease_id)
                    await self.etcd.put(key, value, lease=lease_id)
                    written = (lease_id, value)
                    self.writes += 1
                    if self.on_written is not None:
                        self.on_written(doc)
                except (EtcdUnavailable, EtcdAuthError) as exc:
                    log.debug("registration: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), 0.5)

    async def _check_duplicate(self, key: str, lease_id: int) -> None:
        kv = await self.etcd.get(key)
        if kv is not None and kv.lease not in (0, lease_id):
            log.warning("%s is registered on another lease (%x): a previous run of this "
                        "agent, or another agent with the same --node name", key, kv.lease)
