"""Which etcd document holds a real server's health: one per virtual service, or per shard
of a big one.

Health is stored grouped (``health/<virtual>/*<shard>``, ``observations/<node>/<virtual>/
*<shard>``): a cluster of 40,000 servers in 2,500 virtuals holds 2,500 verdict documents,
not 40,000, and a new config's publication is a few thousand writes, not 120,000. A virtual
of at most :data:`GROUP_SIZE` servers is one shard (``*0``); a bigger one is cut into
``ceil(n / GROUP_SIZE)`` shards by a hash of the server's name, so every router places a
server alike, and a change of one server rewrites at most a few dozen kilobytes.

``*`` is percent-encoded in names (``%2A``), so a group key never clashes with a server's.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from .health import ServerKey

GROUP_SIZE = 100  # servers per shard, on average (a verdict is about 150 bytes of JSON)


def shards_for(servers: int) -> int:
    """How many shards a virtual of ``servers`` real servers is stored in."""
    return max(1, -(-servers // GROUP_SIZE))


def shard_of(server: str, shards: int) -> int:
    """The shard that holds ``server`` in a virtual of ``shards`` shards."""
    if shards == 1:
        return 0
    return zlib.crc32(server.encode("utf-8", "surrogateescape")) % shards


@dataclass
class Layout:
    """The groups of a set of real servers (a router's configured ones)."""

    shards: dict[str, int] = field(default_factory=dict)
    """{virtual: its number of shards}."""
    members: dict[tuple[str, int], frozenset[str]] = field(default_factory=dict)
    """{(virtual, shard): its servers}."""

    @classmethod
    def of(cls, servers: Iterable[ServerKey]) -> Layout:
        by_virtual: dict[str, list[str]] = {}
        for virtual, server in servers:
            by_virtual.setdefault(virtual, []).append(server)
        layout = cls()
        for virtual, names in by_virtual.items():
            n = layout.shards[virtual] = shards_for(len(names))
            groups: dict[int, list[str]] = {}
            for name in names:
                groups.setdefault(shard_of(name, n), []).append(name)
            for shard, members in groups.items():
                layout.members[virtual, shard] = frozenset(members)
        return layout

    def group(self, key: ServerKey) -> tuple[str, int] | None:
        """Where ``key`` belongs (None: not one of ours)."""
        n = self.shards.get(key.virtual)
        return None if n is None else (key.virtual, shard_of(key.server, n))
