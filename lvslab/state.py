"""The lab's state directory: state.json (topology, pids, paths), logs, key, lvs.cf."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .netns import LabError
from .topology import Topology

STATE_ROOT = Path("/run/piranha-lab")
STATE_FILE = "state.json"


def default_state_dir(prefix: str) -> Path:
    return STATE_ROOT / prefix


@dataclass(frozen=True)
class LabState:
    """What ``lab up`` built, so later commands (other processes) can act on it."""

    topology: Topology
    state_dir: str
    config_path: str
    agent_cmd: tuple[str, ...]
    created: str
    pids: dict[str, int] = field(default_factory=dict)
    etcd_token: str = ""  # the etcd cluster's --initial-cluster-token ("": a lab of old)

    @property
    def etcd_url(self) -> str:
        """Every etcd member's client URL, comma-separated."""
        return self.topology.etcd_endpoints

    def with_pid(self, host: str, pid: int | None) -> LabState:
        pids = dict(self.pids)
        if pid is None:
            pids.pop(host, None)
        else:
            pids[host] = pid
        return replace(self, pids=pids)

    def to_json(self) -> dict[str, Any]:
        return {"topology": self.topology.to_json(), "state_dir": self.state_dir,
                "etcd_url": self.etcd_url, "config_path": self.config_path,
                "agent_cmd": list(self.agent_cmd), "created": self.created,
                "pids": self.pids, "etcd_token": self.etcd_token}

    @classmethod
    def from_json(cls, doc: Any) -> LabState:
        if not isinstance(doc, dict):
            raise LabError("state file is not a JSON object")
        try:
            pids = {str(k): int(v) for k, v in dict(doc.get("pids", {})).items()}
            return cls(topology=Topology.from_json(doc["topology"]),
                       state_dir=str(doc["state_dir"]), config_path=str(doc["config_path"]),
                       agent_cmd=tuple(str(a) for a in doc["agent_cmd"]),
                       created=str(doc.get("created", "")), pids=pids,
                       etcd_token=str(doc.get("etcd_token", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise LabError(f"state file is incomplete or damaged ({exc!r})") from None


def save(state: LabState) -> Path:
    """Write state.json atomically."""
    path = Path(state.state_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load(state_dir: str | Path) -> LabState:
    """The saved state; ``LabError`` saying so if it is missing or damaged."""
    path = Path(state_dir) / STATE_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"no lab state at {path}: is the lab up (lvslab up)?") from None
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read {path} ({exc}); `lvslab down` cleans up anyway") from None
    return LabState.from_json(doc)


def write_secret(path: Path, data: str) -> None:
    """Write ``data`` to a new file readable by its owner only (mode 600)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)
