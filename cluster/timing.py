"""The protocol's timers, from lvs.cf, and the constraints its safety argument needs.

Shared by the agent (which runs on them) and the config checks (which refuse a config
that breaks a constraint, naming it). docs/protocol.md explains every one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import LvsConfig

#: What pulse uses when lvs.cf leaves a timer out (Piranha's own were 2 s / 5 s).
DEFAULT_KEEPALIVE = 0.5
DEFAULT_DEADTIME = 2.0
DEFAULT_LEASE_TTL = 2
DEFAULT_HOLD_DOWN = 5.0


@dataclass(frozen=True)
class Timing:
    """Every timer of the protocol, in seconds. :meth:`problems` names broken constraints."""

    ttl: float = 2.0  # lease TTL as granted by etcd
    keepalive: float = 0.5  # heartbeat interval
    deadtime: float = 2.0  # a peer silent this long is dead
    ack_window: float | None = None  # failsafe: acks must be this fresh (default deadtime)
    margin: float = 0.25  # subtracted from every deadline we act on
    vip_lifetime: int = 1  # kernel address lifetime, whole seconds
    kernel_slack: float = 1.0  # the kernel drops an expired address up to this late
    priority_step: float = 0.3  # campaign delay per live router of higher priority
    hold_down: float = 5.0  # preempt: healthy this long before taking over
    switchover_wait: float = 5.0  # how long others defer to a named switchover target
    fast_eviction: bool = False

    @property
    def window(self) -> float:
        return self.deadtime if self.ack_window is None else self.ack_window

    def problems(self) -> list[str]:
        """Timing constraints the safety argument needs; each broken one as a sentence."""
        if self.deadtime < 2 * self.keepalive:
            return [f"deadtime ({self.deadtime:g}s) must be at least twice keepalive "
                    f"({self.keepalive:g}s)"]
        out = []
        if self.margin <= 0 or self.margin >= self.ttl / 2:
            out.append(f"safety margin ({self.margin:g}s) must be > 0 and < TTL/2")
        if self.ack_window is not None and self.window < 2 * self.keepalive:
            out.append(f"ack window ({self.window:g}s) must be at least twice keepalive")
        if not self.fast_eviction and not self.lifetime_covered:
            out.append(
                f"VIP lifetime + kernel slack ({self.vip_lifetime + self.kernel_slack:g}s) must "
                f"not exceed ack window + margin ({self.window + self.margin:g}s): a dead "
                "agent's VIP must be gone before a backup may take over")
        return out

    @property
    def lifetime_covered(self) -> bool:
        """Is a dead agent's VIP gone (kernel lifetime) before any backup may take over?"""
        return self.vip_lifetime + self.kernel_slack <= self.window + self.margin

    @property
    def failsafe_possible(self) -> bool:
        """Failsafe needs acknowledgements to outlive at least one keepalive."""
        return self.window > self.margin + self.keepalive


def timing_from(cfg: LvsConfig) -> Timing:
    """The effective timers of a configuration (lvs.cf values, else pulse's defaults)."""
    keepalive = cfg.keepalive if cfg.keepalive is not None else DEFAULT_KEEPALIVE
    deadtime = cfg.deadtime if cfg.deadtime is not None else max(DEFAULT_DEADTIME, 2 * keepalive)
    return Timing(
        ttl=float(cfg.lease_ttl),
        keepalive=keepalive,
        deadtime=deadtime,
        ack_window=cfg.ack_window,
        margin=min(0.25, deadtime / 4),
        hold_down=cfg.hold_down,
        fast_eviction=cfg.fast_eviction,
    )
