"""Which group documents a publication writes: pure, like the core.

The core decides per server (:class:`~agent.health.core.Writes`); etcd holds groups
(:mod:`cluster.health_layout`). :func:`plan` turns the servers due into whole group
documents: a group holds every member's current document (a member the core has none of
yet keeps what is stored: a server still being configured), a group left empty is deleted,
and every stored group of a touched virtual that names a server it should not (a layout
that changed: a virtual grew past a shard) is rewritten or deleted, so that no server stays
in two groups: the groups such servers move to are written first, so none is ever stored
nowhere. A server still in a per-server key (the layout before groups) loses it once
its group is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from cluster.health import ServerKey
from cluster.health_layout import Layout

D = TypeVar("D")


@dataclass(frozen=True)
class GroupWrite(Generic[D]):
    """One group to write: its entries (None: delete the key), the servers of it that were
    due, and the per-server keys of its members to delete. ``shard`` None: no group, only
    per-server keys to delete (a virtual no longer configured)."""

    virtual: str
    shard: int | None
    entries: dict[str, D] | None
    due: tuple[ServerKey, ...] = ()
    singles: tuple[ServerKey, ...] = ()


def plan(due: Iterable[ServerKey], layout: Layout, docs: Mapping[ServerKey, D],
         stored: Mapping[str, Mapping[str, Mapping[str, D]]],
         stored_doc: Callable[[ServerKey], D | None],
         single: Callable[[ServerKey], bool]) -> list[GroupWrite[D]]:
    """The group writes that store ``docs`` for the ``due`` servers.

    ``layout``: where each configured server belongs; ``docs``: the documents we hold
    (verdicts, or our observations); ``stored``: {virtual: {shard: {server: document}}} as
    etcd holds the groups; ``stored_doc``: a server's stored document, wherever it is;
    ``single``: whether a server still has a per-server key."""
    due = list(due)
    affected: dict[tuple[str, int], list[ServerKey]] = {}
    virtuals: set[str] = set()
    for key in due:
        virtuals.add(key.virtual)
        group = layout.group(key)
        if group is not None:
            affected.setdefault(group, []).append(key)
    # Stored groups that name a server they should not hold (a layout that changed) are
    # rewritten, after the groups those servers move to (so none is ever stored nowhere).
    sources: set[tuple[str, int]] = set()
    work = [*affected]
    for virtual in virtuals:
        work += [(virtual, int(name)) for name in stored.get(virtual, {})]
    while work:
        virtual, shard = work.pop()
        entries = stored.get(virtual, {}).get(str(shard))
        if not entries:
            continue
        n = layout.shards.get(virtual)
        members = layout.members.get((virtual, shard), frozenset())
        if n is not None and shard < n and members.issuperset(entries):
            continue
        sources.add((virtual, shard))
        affected.setdefault((virtual, shard), [])
        for server in entries:
            if server not in members:
                moved = layout.group(ServerKey(virtual, server))
                if moved is not None and moved not in affected:
                    affected[moved] = []
                    work.append(moved)
    out: list[GroupWrite[D]] = []
    for (virtual, shard), due_here in sorted(affected.items(),
                                             key=lambda item: (item[0] in sources, item[0])):
        entries: dict[str, D] = {}
        singles = []
        for server in sorted(layout.members.get((virtual, shard), ())):
            key = ServerKey(virtual, server)
            doc = docs.get(key)
            if doc is None:
                doc = stored_doc(key)  # not decided yet: what is stored stays
            if doc is not None:
                entries[server] = doc
            if single(key):
                singles.append(key)
        singles += [key for key in due_here if key.server not in entries and single(key)]
        held = stored.get(virtual, {}).get(str(shard))
        if not entries and held is None:  # no group to write or delete: per-server keys
            if singles:
                out.append(GroupWrite(virtual, None, None, tuple(due_here), tuple(singles)))
            continue
        if due_here or held != entries or singles:
            out.append(GroupWrite(virtual, shard, entries or None, tuple(due_here),
                                  tuple(singles)))
    # A due server whose virtual is no longer configured: its stored groups went above;
    # its per-server key goes too.
    for key in due:
        if layout.group(key) is None and single(key):
            out.append(GroupWrite(key.virtual, None, None, (key,), (key,)))
    return out
