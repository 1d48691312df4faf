"""The cluster as stored in etcd, read in one go and understood (``lvsctl status``).

:func:`read_status` gets the whole ``/lvs/<cluster>/`` prefix at one revision and
:func:`build_status` turns the key-values into a :class:`ClusterStatus`; keys or values
it cannot understand are listed in ``junk``, never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .etcd.client import KV, Etcd
from .keys import Keys, parse
from .store import StoredConfig, StoredConfigError, decode_config


@dataclass(frozen=True)
class Leader:
    node: str
    term: int  # create revision of the leader key: the fencing token
    since: str
    lease: int


@dataclass
class ClusterStatus:
    cluster: str
    revision: int
    config: StoredConfig | None = None
    config_error: str | None = None
    leader: Leader | None = None
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    health: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    admin: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    junk: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "cluster": self.cluster,
            "revision": self.revision,
            "config": None if cfg is None else {
                "serial_no": cfg.serial_no, "pushed_at": cfg.pushed_at,
                "pushed_by": cfg.pushed_by, "revision": cfg.revision},
            "config_error": self.config_error,
            "leader": None if self.leader is None else vars(self.leader),
            "nodes": self.nodes,
            "virtuals": self.virtuals(),
            "junk": self.junk,
        }

    def virtuals(self) -> list[dict[str, Any]]:
        """Each configured virtual with its servers' health and admin state."""
        if self.config is None:
            return []
        out = []
        for v in self.config.config.virtuals:
            servers = []
            for s in v.servers:
                health = self.health.get((v.name, s.name), {})
                servers.append({
                    "name": s.name, "address": str(s.address), "port": v.effective_port(s),
                    "weight": s.weight, "active": s.active,
                    "state": health.get("state", "unknown"),
                    "effective_weight": health.get("weight"),
                    "since": health.get("since"), "reason": health.get("reason"),
                    "admin": self.admin.get((v.name, s.name), {}).get("state"),
                })
            service = (f"fwmark {v.fwmark}" if v.fwmark is not None
                       else f"{v.protocol} {_hostport(str(v.address.ip), v.port)}")
            out.append({"name": v.name, "service": service, "active": v.active,
                        "scheduler": v.scheduler, "servers": servers})
        return out


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _json_object(kv: KV) -> dict[str, Any] | None:
    try:
        doc = json.loads(kv.value)
    except (UnicodeDecodeError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def build_status(keys: Keys, kvs: list[KV], revision: int) -> ClusterStatus:
    """Understand every key under the cluster prefix (pure)."""
    st = ClusterStatus(keys.cluster, revision)
    for kv in kvs:
        pk = parse(keys, kv.key)
        if pk is None:
            st.junk.append(f"{kv.key}: unknown key")
            continue
        if pk.kind == "config":
            try:
                st.config = decode_config(kv)
            except StoredConfigError as exc:
                st.config_error = str(exc)
            continue
        if pk.kind in ("history", "control", "observations"):
            continue
        doc = _json_object(kv)
        if doc is None:
            st.junk.append(f"{kv.key}: value is not a JSON object")
        elif pk.kind == "leader":
            st.leader = Leader(str(doc.get("node", "?")), kv.create_revision,
                               str(doc.get("since", "")), kv.lease)
        elif pk.kind == "nodes":
            st.nodes[pk.parts[0]] = doc
        elif pk.kind == "health":
            st.health[(pk.parts[0], pk.parts[1])] = doc
        elif pk.kind == "admin":
            st.admin[(pk.parts[0], pk.parts[1])] = doc
    return st


async def read_status(etcd: Etcd, keys: Keys) -> ClusterStatus:
    kvs, revision = await etcd.get_prefix(keys.prefix)
    return build_status(keys, kvs, revision)
