"""The page server's one view of the cluster, shared by every browser.

One etcd watch keeps the cluster state; every ``probe_every`` seconds the server asks
etcd how long each router's lease has left (one small request per router) and reads each
agent's metrics (HTTP, not etcd). A change is folded into a new page model at most every
``debounce`` seconds, and every open page gets it pushed: a thousand open pages cost etcd
nothing more than one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ..documents import ClusterState, DocumentError
from ..etcd.client import KV, Etcd, EtcdAuthError, EtcdUnavailable
from ..etcd.watch import PrefixWatch, Snapshot
from ..history import Event, decode_event, kind_of
from ..keys import Keys
from ..status import ClusterStatus
from .model import TRAFFIC, Live, Sample, page_model

log = logging.getLogger(__name__)

#: The agents' series the page uses (the rest of a scrape is dropped at once).
WANTED = {"lvs_heartbeat_peer_age_seconds", "lvs_vips_held", *TRAFFIC.values()}
EVENTS_KEPT = 200  # the newest events of the history in etcd (written by the agents)


class Feed:
    """The shared view: :meth:`run` keeps it current, :meth:`next` waits for a newer one."""

    def __init__(self, etcd: Etcd, keys: Keys, *, actions: bool = False,
                 probe_every: float = 2.0, debounce: float = 0.2) -> None:
        self.etcd, self.keys = etcd, keys
        self.probe_every, self.debounce = probe_every, debounce
        self.state = ClusterState(keys)
        self.kvs: dict[str, KV] = {}
        self.revision = 0
        self.live = Live(actions=actions)
        self.events: collections.deque[Event] = collections.deque(maxlen=EVENTS_KEPT)
        self.junk_events = 0
        self.version = 0
        self.model: dict[str, Any] = {}
        #: {virtual name: (the version it last changed at, its JSON)}: a page that has seen
        #: version V gets only the virtuals changed since (40,000 servers are megabytes).
        self.virtuals: dict[str, tuple[int, str]] = {}
        self.synced = False  # a first snapshot of etcd has been read
        self._changed = asyncio.Condition()
        self._dirty = asyncio.Event()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch())
            tg.create_task(self._probe())
            tg.create_task(self._publish())

    async def next(self, seen: int) -> tuple[int, dict[str, Any]]:
        """The model once it is newer than version ``seen`` (callers bound the wait)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.version > seen)
            return self.version, self.model

    async def next_message(self, seen: int) -> tuple[int, str]:
        """What a page that has seen version ``seen`` (0: nothing) needs, as JSON: the whole
        model first, then patches: the model less its virtuals, the virtuals that changed
        since ``seen`` (``changed``) and the order of them all (``order``)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.version > seen)
            version, model = self.version, self.model
            if not seen:
                return version, json.dumps({"full": True, **model})
            head = {k: v for k, v in model.items() if k != "virtuals"}
            changed = ",".join(text for at, text in self.virtuals.values() if at > seen)
            order = json.dumps([v["name"] for v in model.get("virtuals", ())])
            return version, (json.dumps({"full": False, **head})[:-1]
                             + f', "changed": [{changed}], "order": {order}}}')

    # -- inputs --------------------------------------------------------------------------

    async def _watch(self) -> None:
        async for update in PrefixWatch(self.etcd, self.keys.prefix):
            if isinstance(update, Snapshot):
                self.kvs = dict(update.items)
                self.state = ClusterState.from_kvs(self.keys, update.items.values())
                self.revision = update.revision
                self.events.clear()
                self._add_events(update.items.values())
                self.synced = True
            else:
                for change in update:
                    if change.kv is None:
                        self.kvs.pop(change.key, None)
                    else:
                        self.kvs[change.key] = change.kv
                    self.state.apply(change.key, change.kv)
                    self.revision = max(self.revision, change.revision)
                self._add_events(c.kv for c in update if c.kv is not None)
            self._dirty.set()

    def _add_events(self, kvs: Iterable[KV]) -> None:
        """Keep the newest history events among ``kvs`` (written once: an overwrite or
        a prune is no new event)."""
        fresh = []
        for kv in kvs:
            if kind_of(self.keys, kv.key) is None or kv.mod_revision != kv.create_revision:
                continue
            try:
                fresh.append(decode_event(self.keys, kv))
            except DocumentError:
                self.junk_events += 1
        for event in sorted(fresh, key=lambda e: (e.revision, e.key)):
            self.events.appendleft(event)

    async def _probe(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(0.5, self.probe_every / 2))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                nodes = dict(self.state.nodes)
                leases, scraped = await asyncio.gather(
                    self._leases(), asyncio.gather(*(
                        _scrape(http, n.metrics) for n in nodes.values())))
                self.live.lease_left = leases
                self.live.metrics, self.live.scrape_errors = {}, {}
                for name, (samples, error) in zip(nodes, scraped, strict=True):
                    if samples is not None:
                        self.live.metrics[name] = samples
                    elif error:
                        self.live.scrape_errors[name] = error
                self._dirty.set()
                await asyncio.sleep(self.probe_every)

    async def _leases(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in list(self.state.nodes):
            kv = self.kvs.get(self.keys.node(name))
            if kv is None or not kv.lease:
                continue
            with contextlib.suppress(EtcdUnavailable, EtcdAuthError):
                out[name] = await self.etcd.time_to_live(kv.lease)
        return out

    # -- output --------------------------------------------------------------------------

    async def _publish(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.debounce)  # fold a burst of changes into one push
            self._dirty.clear()
            if not self.synced:
                continue
            self.live.now = time.time()
            self.live.events = [e.to_json() for e in self.events]
            model = page_model(ClusterStatus(self.keys.cluster, self.revision, self.state),
                               self.live)
            async with self._changed:
                self.version += 1
                self.model = model
                texts = {v["name"]: json.dumps(v) for v in model.get("virtuals", ())}
                self.virtuals = {
                    name: (old[0], text) if (old := self.virtuals.get(name)) is not None
                    and old[1] == text else (self.version, text)
                    for name, text in texts.items()}
                self._changed.notify_all()


async def _scrape(http: aiohttp.ClientSession,
                  address: str) -> tuple[list[Sample] | None, str | None]:
    """An agent's series the page uses; (None, why) if it cannot be read."""
    if not address:
        return None, None
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        return None, f"metrics served on {address}: no address to reach"
    url = f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"
    try:
        async with http.get(url) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return None, f"{url}: {type(exc).__name__} {exc}".strip()
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in WANTED:
                out.append(Sample(s.name, dict(s.labels), float(s.value)))
    return out, None
