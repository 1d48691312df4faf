"""The etcd key layout under ``/lvs/<cluster>/`` (documented in docs/etcd-layout.md).

Names of virtuals, servers and nodes are percent-encoded in keys, so any lvs.cf name
is safe; :func:`parse` maps a key back and returns None for keys we do not know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

ROOT = "/lvs/"
GROUP = "*"  # a group key's last part: ``*<shard>`` (never a percent-encoded name)
_CLUSTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_cluster_name(name: str) -> str:
    if not _CLUSTER_RE.match(name):
        raise ValueError(
            f"bad cluster name {name!r}: use letters, digits, '_', '.', '-' (max 63)"
        )
    return name


def _q(name: str) -> str:
    return quote(name, safe="")


@dataclass(frozen=True)
class Keys:
    """Key builder for one cluster."""

    cluster: str

    def __post_init__(self) -> None:
        check_cluster_name(self.cluster)

    @property
    def prefix(self) -> str:
        return f"{ROOT}{self.cluster}/"

    @property
    def config(self) -> str:
        return f"{self.prefix}config"

    @property
    def config_parts_prefix(self) -> str:
        """``config-parts/``: the parts a format-2 config head names (cluster.config_layout)."""
        return f"{self.prefix}config-parts/"

    def config_part(self, digest: str) -> str:
        return f"{self.config_parts_prefix}{_q(digest)}"

    def config_history(self, serial: int) -> str:
        return f"{self.prefix}history/config/{serial:012d}"

    @property
    def config_history_prefix(self) -> str:
        return f"{self.prefix}history/config/"

    @property
    def history_prefix(self) -> str:
        """Every event kind's history: ``history/<kind>/``."""
        return f"{self.prefix}history/"

    def history_kind_prefix(self, kind: str) -> str:
        return f"{self.history_prefix}{_q(kind)}/"

    def history_event(self, kind: str, event_id: str) -> str:
        """``history/<kind>/<id>``; ids of events are made by
        :func:`cluster.history.event_id` (time first: they sort by time)."""
        return f"{self.history_kind_prefix(kind)}{_q(event_id)}"

    @property
    def seed(self) -> str:
        return f"{self.prefix}seed"

    @property
    def leader(self) -> str:
        return f"{self.prefix}leader"

    @property
    def nodes_prefix(self) -> str:
        return f"{self.prefix}nodes/"

    def node(self, name: str) -> str:
        return f"{self.nodes_prefix}{_q(name)}"

    @property
    def health_prefix(self) -> str:
        return f"{self.prefix}health/"

    def health(self, virtual: str, server: str) -> str:
        """One server's verdict: the layout before groups (still read, no longer written)."""
        return f"{self.health_prefix}{_q(virtual)}/{_q(server)}"

    def health_group(self, virtual: str, shard: int) -> str:
        """The verdicts of one shard of a virtual (cluster.health_layout)."""
        return f"{self.health_prefix}{_q(virtual)}/{GROUP}{shard}"

    @property
    def observations_prefix(self) -> str:
        return f"{self.prefix}observations/"

    def observation(self, node: str, virtual: str, server: str) -> str:
        """One server's observation: the layout before groups (still read)."""
        return f"{self.observations_prefix}{_q(node)}/{_q(virtual)}/{_q(server)}"

    def observation_group(self, node: str, virtual: str, shard: int) -> str:
        """One router's observations of one shard of a virtual."""
        return f"{self.observations_prefix}{_q(node)}/{_q(virtual)}/{GROUP}{shard}"

    @property
    def admin_prefix(self) -> str:
        return f"{self.prefix}admin/"

    def admin(self, virtual: str, server: str) -> str:
        return f"{self.admin_prefix}{_q(virtual)}/{_q(server)}"

    @property
    def control_prefix(self) -> str:
        return f"{self.prefix}control/"

    @property
    def switchover(self) -> str:
        return f"{self.control_prefix}switchover"

    @property
    def released(self) -> str:
        return f"{self.control_prefix}released"

    def eviction(self, voter: str) -> str:
        return f"{self.control_prefix}evict-{_q(voter)}"


@dataclass(frozen=True)
class ParsedKey:
    """A key of ours split into its kind and name parts, e.g. ("health", ("web", "rs1")).
    Group keys are kinds of their own: ("health-group", ("web", "0")),
    ("observations-group", ("r1", "web", "0"))."""

    kind: str
    parts: tuple[str, ...] = ()


_SHAPES = {
    "config": 0,
    "config-parts": 1,
    "seed": 0,
    "leader": 0,
    "nodes": 1,
    "health": 2,
    "observations": 3,
    "admin": 2,
    "control": 1,
    "history": 2,
}


_GROUPED = ("health", "observations")


def parse(keys: Keys, key: str) -> ParsedKey | None:
    """Classify a key under the cluster prefix; None if it is not one of ours (junk)."""
    if not key.startswith(keys.prefix):
        return None
    rest = key[len(keys.prefix):].split("/")
    kind, parts = rest[0], rest[1:]
    if _SHAPES.get(kind) != len(parts) or any(p == "" for p in parts):
        return None
    if kind in _GROUPED and parts[-1].startswith(GROUP):
        shard = parts[-1][len(GROUP):]
        if not (shard.isdigit() and shard.isascii() and str(int(shard)) == shard):
            return None
        return ParsedKey(f"{kind}-group", (*(unquote(p) for p in parts[:-1]), shard))
    return ParsedKey(kind, tuple(unquote(p) for p in parts))
