"""The cluster's hash seed in etcd (``seed``): created once, replaced only when asked.

Every router computes its Maglev (``mh``) tables from this seed (docs/etcd-layout.md,
``seed``). :func:`ensure_seed` creates a random one if the cluster has none, in a
create-if-absent transaction, so concurrent callers end up with the same one;
:func:`new_seed` replaces it (``lvsctl seed --new``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .documents import DocumentError, HashSeed, default_seed, now_iso
from .etcd.client import CreateRevision, Etcd, Get, Put
from .keys import Keys


@dataclass(frozen=True)
class SeedState:
    """What etcd holds under ``seed``: the document, or why it is junk, or nothing."""

    stored: HashSeed | None
    junk: str | None = None

    def effective(self, cluster: str) -> int:
        """The seed the routers use: the stored one, else the cluster's default."""
        return self.stored.seed if self.stored is not None else default_seed(cluster)


async def load_seed(etcd: Etcd, keys: Keys) -> SeedState:
    kv = await etcd.get(keys.seed)
    return _state(kv.value if kv is not None else None)


async def ensure_seed(etcd: Etcd, keys: Keys, by: str) -> tuple[SeedState, bool]:
    """The cluster's seed, created (random) if there is none; (state, created by us).

    A junk value is left alone (and reported in the state): replacing it is
    :func:`new_seed`'s job, on an operator's request."""
    doc = HashSeed(seed=secrets.randbits(32), created_at=now_iso(), created_by=by)
    result = await etcd.txn([CreateRevision(keys.seed, 0)], [Put(keys.seed, doc.encode())],
                            [Get(keys.seed)])
    if result.succeeded:
        return SeedState(doc), True
    (found,) = result.ranges[0] or (None,)
    return _state(found.value if found is not None else None), False


async def new_seed(etcd: Etcd, keys: Keys, by: str) -> HashSeed:
    """Replace the seed with a new random one (every ``mh`` flow may move)."""
    doc = HashSeed(seed=secrets.randbits(32), created_at=now_iso(), created_by=by)
    await etcd.put(keys.seed, doc.encode())
    return doc


def _state(value: bytes | None) -> SeedState:
    if value is None:
        return SeedState(None)
    try:
        return SeedState(HashSeed.decode(value))
    except DocumentError as exc:
        return SeedState(None, str(exc))
