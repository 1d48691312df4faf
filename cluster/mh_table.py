"""The size of a Maglev (``scheduler = mh``) lookup table, from the configuration alone.

Shared knowledge: every router sizes its table the same (agent/dataplane/maglev.py), and
``lvsctl config diff`` warns when an edit changes a size (that moves nearly every flow).
"""

from __future__ import annotations

#: The table holds at least this many slots per configured real server: enough that adding
#: or removing a server in the configuration moves at most about 1 % of the flows beyond
#: the necessary (issue 10's target; docs/benchmarks.md, "Maglev").
SLOTS_PER_SERVER = 400
#: Table sizes: the largest prime below each power of two from 2**15 (IPVS's mh has the
#: same ladder up to 131071). The size is the first at or above ``SLOTS_PER_SERVER *
#: servers``: steps that double, so that adding a server to the configuration seldom
#: changes the size (a new size moves nearly every flow: `lvsctl config diff` says so).
#: At least 32749 (81 servers): small services move more per slot per server. The price:
#: every change of a live server rewrites the service's map, one element per slot.
SIZES = (32749, 65521, 131071, 262139, 524287, 1048573, 2097143, 4194301)
MAX_SERVERS = SIZES[-1] // SLOTS_PER_SERVER


def table_size(servers: int) -> int:
    """The table size for a service of ``servers`` configured real servers.

    The first of :data:`SIZES` at or above ``SLOTS_PER_SERVER * servers``.
    Counted from the configuration, not from the servers that are up, so that health never
    changes it. ValueError above :data:`MAX_SERVERS`.
    """
    want = SLOTS_PER_SERVER * max(servers, 1)
    for size in SIZES:
        if size >= want:
            return size
    raise ValueError(f"Maglev: at most {MAX_SERVERS} real servers per service, not {servers}")


def resized(old_servers: int, new_servers: int) -> tuple[int, int] | None:
    """(old size, new size) if a service going from ``old_servers`` to ``new_servers``
    configured real servers changes table size, else None."""
    a, b = table_size(old_servers), table_size(new_servers)
    return (a, b) if a != b else None
