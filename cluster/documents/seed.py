"""``seed``: the cluster's hash seed, from which every router computes the same Maglev
(``mh``) tables (agent/dataplane/maglev.py; docs/nftables-backend.md, "Maglev").

Created once, by ``lvsctl config push`` when the cluster has none (a create-if-absent
transaction: concurrent pushes agree on one), changed only by ``lvsctl seed --new``. Until
one exists the routers use :func:`default_seed` of the cluster name, which every router
computes alike without etcd.
"""

from __future__ import annotations

import hashlib

from pydantic import Field

from .base import Document

SEED_MAX = 2**32 - 1


class HashSeed(Document):
    WHAT = "hash seed"
    seed: int = Field(ge=0, le=SEED_MAX)
    """The seed, 0..2^32-1: nftables' jhash seed and the key of the Maglev permutations."""
    created_at: str = ""
    """When it was written (UTC)."""
    created_by: str = ""
    """Who wrote it (`user@host`) and how (`config push`, `seed --new`)."""


def default_seed(cluster: str) -> int:
    """The seed of a cluster that has none in etcd: a hash of its name, so every router of
    the cluster has the same one and clusters differ."""
    digest = hashlib.blake2b(cluster.encode(), digest_size=4, person=b"piranha-seed").digest()
    return int.from_bytes(digest, "big")
