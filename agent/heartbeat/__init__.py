"""UDP heartbeat between the routers: pulse's second liveness signal beside the etcd lease.

Layers, each usable alone:

- :mod:`~agent.heartbeat.packet`: the signed wire format (encode/decode, stateless checks).
- :mod:`~agent.heartbeat.verify`: cluster, sender, freshness and anti-replay checks.
- :mod:`~agent.heartbeat.table`: :class:`PeerTable`, liveness/claims/acks from events.
- :mod:`~agent.heartbeat.service`: :class:`HeartbeatService`, the asyncio UDP shell.

See docs/heartbeat.md for the protocol.
"""

from agent.heartbeat.config import ConfigError, HeartbeatConfig, load_secret
from agent.heartbeat.links import BindError
from agent.heartbeat.packet import (
    MAX_PACKET,
    REASONS,
    ROLES,
    Ack,
    Heartbeat,
    Incarnation,
    PacketTooLarge,
    Reason,
    Rejected,
    Role,
    decode,
    encode,
)
from agent.heartbeat.service import Counters, HeartbeatService, LocalState
from agent.heartbeat.table import (
    ActiveClaim,
    Change,
    PeerAlive,
    PeerDead,
    PeerRestarted,
    PeerStatus,
    PeerTable,
    PeerView,
)
from agent.heartbeat.verify import ReplayGuard, Verifier

__all__ = [
    "MAX_PACKET",
    "REASONS",
    "ROLES",
    "Ack",
    "ActiveClaim",
    "BindError",
    "Change",
    "ConfigError",
    "Counters",
    "Heartbeat",
    "HeartbeatConfig",
    "HeartbeatService",
    "Incarnation",
    "LocalState",
    "PacketTooLarge",
    "PeerAlive",
    "PeerDead",
    "PeerRestarted",
    "PeerStatus",
    "PeerTable",
    "PeerView",
    "Reason",
    "Rejected",
    "ReplayGuard",
    "Role",
    "Verifier",
    "decode",
    "encode",
    "load_secret",
]
