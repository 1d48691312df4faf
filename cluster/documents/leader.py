"""``leader``: who holds the active role. The term is the key's create revision."""

from __future__ import annotations

from dataclasses import dataclass

from ..etcd.client import KV
from .base import Document, DocumentError


class LeaderDoc(Document):
    """The value of the leader key, written by the router that wins a campaign."""

    WHAT = "leader document"
    node: str
    """The active router."""
    since: str = ""
    """When it won the key (UTC)."""


@dataclass(frozen=True)
class LeaderKey:
    """The leader key as etcd holds it: the value, plus the term (create revision, the
    fencing token) and the lease it is bound to."""

    node: str
    term: int
    lease: int
    since: str = ""

    @classmethod
    def from_kv(cls, kv: KV) -> LeaderKey:
        """Never fails: a leader key whose value is unreadable still holds its term and
        lease (it blocks every campaign); its node is then ""."""
        try:
            doc = LeaderDoc.decode(kv.value)
        except DocumentError:
            return cls("", kv.create_revision, kv.lease)
        return cls(doc.node, kv.create_revision, kv.lease, doc.since)

    def doc(self) -> LeaderDoc:
        return LeaderDoc(node=self.node, since=self.since)
