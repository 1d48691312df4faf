"""One typed home for every etcd document under ``/lvs/<cluster>/``.

Each document is a frozen type with ``encode() -> str`` (readable JSON) and a ``decode()``
classmethod that raises :class:`DocumentError` for junk; :class:`ClusterState` turns the
key-values of a cluster into typed state, one key at a time. The key layout itself is
:mod:`cluster.keys`; docs/etcd-layout.md documents both (tests keep them in step).
"""

from .admin import AdminFlag
from .base import Document, DocumentError, epoch, iso, now_iso
from .config import FORMAT, ConfigEnvelope, ConfigHistoryEntry, StoredConfig, StoredConfigError
from .config_parts import ConfigHead, ConfigPart
from .eviction import EvictionVote
from .health import HealthGroup, HealthVerdict, Observation, ObservationGroup, State
from .history import FailoverEvent, HealthTransition, SwitchoverEvent
from .leader import LeaderDoc, LeaderKey
from .node import ConfigRefusal, NodeRecord
from .released import ReleasedMarker
from .seed import HashSeed, default_seed
from .state import ClusterState, Junk, ServerKey
from .switchover import SwitchoverRequest

__all__ = [
    "FORMAT",
    "AdminFlag",
    "ClusterState",
    "ConfigEnvelope",
    "ConfigHead",
    "ConfigHistoryEntry",
    "ConfigPart",
    "ConfigRefusal",
    "Document",
    "DocumentError",
    "EvictionVote",
    "FailoverEvent",
    "HashSeed",
    "HealthGroup",
    "HealthTransition",
    "HealthVerdict",
    "Junk",
    "LeaderDoc",
    "LeaderKey",
    "NodeRecord",
    "Observation",
    "ObservationGroup",
    "ReleasedMarker",
    "ServerKey",
    "State",
    "StoredConfig",
    "StoredConfigError",
    "SwitchoverEvent",
    "SwitchoverRequest",
    "default_seed",
    "epoch",
    "iso",
    "now_iso",
]

# Every document stored under a key, with where it lives (docs/etcd-layout.md follows this).
DOCUMENTS: dict[str, type[Document]] = {
    "leader": LeaderDoc,
    "nodes/<node>": NodeRecord,
    "health/<virtual>/*<shard>": HealthGroup,
    "observations/<node>/<virtual>/*<shard>": ObservationGroup,
    "health/<virtual>/<server>": HealthVerdict,
    "observations/<node>/<virtual>/<server>": Observation,
    "admin/<virtual>/<server>": AdminFlag,
    "control/switchover": SwitchoverRequest,
    "control/released": ReleasedMarker,
    "control/evict-<voter>": EvictionVote,
    "config": ConfigHead,
    "config-parts/<digest>": ConfigPart,
    "history/config/<serial_no>": ConfigHistoryEntry,
    "history/failover/<id>": FailoverEvent,
    "history/switchover/<id>": SwitchoverEvent,
    "history/health/<id>": HealthTransition,
    "seed": HashSeed,
}
