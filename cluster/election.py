"""The leader key: campaign, resign, read, and writes fenced by the term.

The active router holds ``/lvs/<cluster>/leader``, created only if absent and bound to its
lease. The key's create revision is the *term*: it grows with every new leader and is the
fencing token. Writes only the active may make go through :func:`fenced_put`, a
transaction that fails unless the leader key still has that create revision.
"""

from __future__ import annotations

from .documents import LeaderDoc, LeaderKey, ReleasedMarker, now_iso
from .etcd.client import CreateRevision, Delete, Etcd, Get, Put
from .keys import Keys

__all__ = ["LeaderKey", "campaign", "fence", "fenced_put", "read_leader", "resign"]


async def campaign(etcd: Etcd, keys: Keys, node: str, lease: int) -> tuple[bool, LeaderKey | None]:
    """Create the leader key if absent. Returns (won, the leader key now)."""
    doc = LeaderDoc(node=node, since=now_iso())
    result = await etcd.txn(
        [CreateRevision(keys.leader, 0)],
        [Put(keys.leader, doc.encode(), lease)],
        [Get(keys.leader)],
    )
    if result.succeeded:
        return True, LeaderKey(node, result.revision, lease, doc.since)
    kvs = result.ranges[0]
    return False, LeaderKey.from_kv(kvs[0]) if kvs else None


async def resign(etcd: Etcd, keys: Keys, term: int, node: str, reason: str = "") -> int | None:
    """Delete the leader key if it is still ours (same term): the revision it was deleted
    at, None if it was not ours.

    Call only after every VIP is released: the same transaction leaves the
    ``control/released`` marker that lets the next active skip waiting for us.
    """
    marker = ReleasedMarker(node=node, term=term, at=now_iso(), reason=reason)
    result = await etcd.txn(
        [fence(keys, term)],
        [Delete(keys.leader), Put(keys.released, marker.encode())],
    )
    return result.revision if result.succeeded else None


async def read_leader(etcd: Etcd, keys: Keys) -> LeaderKey | None:
    kv = await etcd.get(keys.leader)
    return LeaderKey.from_kv(kv) if kv is not None else None


def fence(keys: Keys, term: int) -> CreateRevision:
    """The guard for writes only the active of ``term`` may make."""
    return CreateRevision(keys.leader, term)


async def fenced_put(etcd: Etcd, keys: Keys, term: int, puts: dict[str, str],
                     deletes: tuple[str, ...] = ()) -> bool:
    """Write ``puts`` (and delete ``deletes``) only while ``term`` holds the leader key."""
    ops: list[Put | Delete] = [Put(k, v) for k, v in puts.items()]
    ops += [Delete(k) for k in deletes]
    result = await etcd.txn([fence(keys, term)], ops)
    return result.succeeded
