"""Does every live router run a given config? (pure; ``lvsctl status`` and ``push --wait``)

Routers report in their ``nodes/<node>`` record the serial_no they run (``config_serial``)
and the newest stored config they refused, with the reason (``config_refused``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .documents import ClusterState, ConfigRefusal


@dataclass(frozen=True)
class Rollout:
    """Where config ``serial_no`` stands among the live (registered) routers."""

    serial_no: int
    running: tuple[str, ...] = ()
    refused: dict[str, ConfigRefusal] = field(default_factory=dict)
    """{router: its refusal of ``serial_no``}."""
    pending: tuple[str, ...] = ()
    """Live routers that neither run ``serial_no`` nor refused it (yet)."""
    behind: dict[str, str] = field(default_factory=dict)
    """{router: why it does not run ``serial_no``}, for every router not running it."""

    @property
    def done(self) -> bool:
        return not self.pending and not self.refused


def rollout(state: ClusterState, serial_no: int) -> Rollout:
    running, pending = [], []
    refused: dict[str, ConfigRefusal] = {}
    behind: dict[str, str] = {}
    for name in sorted(state.registered):
        node = state.nodes.get(name)
        if node is not None and node.runs(serial_no):
            running.append(name)
            continue
        refusal = node.refused(serial_no) if node is not None else None
        if refusal is not None:
            refused[name] = refusal
            behind[name] = f"refused it: {refusal.reason}"
            continue
        pending.append(name)
        if node is None:
            behind[name] = "its registration is unreadable"
        elif node.config_serial is None:
            behind[name] = "it does not report a config it runs"
        else:
            behind[name] = f"it runs serial_no {node.config_serial}"
    return Rollout(serial_no, tuple(running), refused, tuple(pending), behind)
