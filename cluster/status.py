"""The cluster as stored in etcd, read in one go and understood (``lvsctl status``).

:func:`read_status` gets the whole ``/lvs/<cluster>/`` prefix at one revision and
:func:`build_status` turns the key-values into a :class:`ClusterStatus` (a
:class:`~cluster.documents.ClusterState` and what an operator asks of it); keys or values it
cannot understand are listed in ``junk``, never fatal.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from .documents import ClusterState, LeaderKey, NodeRecord, StoredConfig
from .etcd.client import KV, Etcd
from .health import ServerKey
from .keys import Keys
from .lvscf import cannot_run
from .rollout import Rollout, rollout


@dataclass
class ClusterStatus:
    cluster: str
    revision: int
    state: ClusterState

    @property
    def config(self) -> StoredConfig | None:
        return self.state.config

    @property
    def config_error(self) -> str | None:
        return self.state.config_error

    @functools.cached_property
    def config_problems(self) -> list[str]:
        """Why the stored config cannot run (agents refuse it), as FILE:LINE: message.

        ``lvsctl config push`` never stores such a config; one written by hand, or by an
        older version, shows here."""
        cfg = self.config
        if cfg is None:
            return []
        return [str(p) for p in cannot_run(cfg.config, "lvs.cf", source=cfg.source)]

    @property
    def leader(self) -> LeaderKey | None:
        return self.state.leader

    @property
    def nodes(self) -> dict[str, NodeRecord]:
        return self.state.nodes

    @property
    def junk(self) -> list[str]:
        return [str(j) for j in self.state.junk_list()]

    def rollout(self) -> Rollout | None:
        """Which live routers run the stored config (None if no valid config is stored)."""
        return rollout(self.state, self.config.serial_no) if self.config else None

    def to_json(self) -> dict[str, Any]:
        cfg, ro = self.config, self.rollout()
        return {
            "cluster": self.cluster,
            "revision": self.revision,
            "config": None if cfg is None else {
                "serial_no": cfg.serial_no, "pushed_at": cfg.pushed_at,
                "pushed_by": cfg.pushed_by, "revision": cfg.revision},
            "config_error": self.config_error,
            "config_problems": self.config_problems,
            "leader": None if self.leader is None else dataclasses.asdict(self.leader),
            "nodes": {name: node.model_dump(mode="json") for name, node in self.nodes.items()},
            "not_running_stored_config": [] if ro is None else [
                {"node": name, "config_serial": self._serial(name), "why": why}
                for name, why in ro.behind.items()],
            "virtuals": self.virtuals(),
            "junk": self.junk,
        }

    def _serial(self, name: str) -> int | None:
        node = self.nodes.get(name)
        return node.config_serial if node else None

    def virtuals(self) -> list[dict[str, Any]]:
        """Each configured virtual with its servers' health and admin state."""
        if self.config is None:
            return []
        out = []
        for v in self.config.config.virtuals:
            servers = []
            for s in v.servers:
                key = ServerKey(v.name, s.name)
                health, admin = self.state.health.get(key), self.state.admin.get(key)
                servers.append({
                    "name": s.name, "address": str(s.address), "port": v.effective_port(s),
                    "weight": s.weight, "active": s.active,
                    "state": health.state if health else "unknown",
                    "effective_weight": health.weight if health else None,
                    "since": health.since if health else None,
                    "reason": health.reason if health else None,
                    "admin": admin.state if admin else None,
                })
            service = (f"fwmark {v.fwmark}" if v.fwmark is not None
                       else f"{v.protocol} {_hostport(str(v.address.ip), v.port)}")
            out.append({"name": v.name, "service": service, "active": v.active,
                        "scheduler": v.scheduler, "servers": servers})
        return out


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_status(keys: Keys, kvs: list[KV], revision: int) -> ClusterStatus:
    """Understand every key under the cluster prefix (pure)."""
    return ClusterStatus(keys.cluster, revision, ClusterState.from_kvs(keys, kvs))


async def read_status(etcd: Etcd, keys: Keys) -> ClusterStatus:
    kvs, revision = await etcd.scan(keys.prefix)
    return build_status(keys, kvs, revision)
