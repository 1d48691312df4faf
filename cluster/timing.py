"""The protocol's timers, from lvs.cf, and the constraints its safety argument needs.

Shared by the agent (which runs on them) and the config checks (which refuse a config
that breaks a constraint, naming it). docs/protocol.md explains every one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .model import LvsConfig

#: What pulse uses when lvs.cf leaves keepalive or deadtime out (the model keeps them None,
#: "not given"; Piranha's own were 2 s / 5 s). Every other timer that lvs.cf can set has its
#: default on its field of :class:`LvsConfig`.
DEFAULT_KEEPALIVE = 0.5
DEFAULT_DEADTIME = 2.0
#: The safety margin, at most (a quarter of deadtime when that is shorter).
MAX_MARGIN = 0.25


def _cf(directive: str) -> Any:
    """The default of an lvs.cf directive: the model is its one home."""
    return LvsConfig.model_fields[directive].default


def margin_for(deadtime: float) -> float:
    """The safety margin subtracted from every deadline we act on."""
    return min(MAX_MARGIN, deadtime / 4)


@dataclass(frozen=True)
class Timing:
    """Every timer of the protocol, in seconds. :meth:`problems` names broken constraints.

    The defaults are those of an lvs.cf that sets no timer: ``Timing() ==
    timing_from(LvsConfig())``.
    """

    ttl: float = float(_cf("lease_ttl"))  # lease TTL as granted by etcd
    keepalive: float = DEFAULT_KEEPALIVE  # heartbeat interval
    deadtime: float = DEFAULT_DEADTIME  # a peer silent this long is dead
    ack_window: float | None = _cf("ack_window")  # failsafe: acks this fresh (None: deadtime)
    margin: float = margin_for(DEFAULT_DEADTIME)  # subtracted from every deadline we act on
    vip_lifetime: int = 1  # kernel address lifetime, whole seconds
    kernel_slack: float = 1.0  # the kernel drops an expired address up to this late (its
    # lifetime check runs at most once a second; measured: at most 0.79 s, docs/vip.md)
    priority_step: float = 0.3  # campaign delay per live router of higher priority
    hold_down: float = _cf("hold_down")  # preempt: healthy this long before taking over
    switchover_wait: float = 5.0  # how long others defer to a named switchover target
    fast_eviction: bool = _cf("fast_eviction")

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
                f"VIP lifetime + kernel slack ({self.vip_survival:g}s) must "
                f"not exceed ack window + margin ({self.window + self.margin:g}s): a dead "
                "agent's VIP must be gone before a backup may take over")
        return out

    @property
    def vip_survival(self) -> float:
        """How long an address can outlive its last renew (lifetime + kernel slack)."""
        return self.vip_lifetime + self.kernel_slack

    @property
    def vip_renew_every(self) -> float:
        """Renew period of the VIP lifetimes: four renews per lifetime (the kernel may drop
        an address 20 ms early, and the event loop may be late)."""
        return self.vip_lifetime / 4

    @property
    def lifetime_covered(self) -> bool:
        """Is a dead agent's VIP gone (kernel lifetime) before any backup may take over?"""
        return self.vip_survival <= self.window + self.margin

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
        margin=cfg.safety_margin if cfg.safety_margin is not None else margin_for(deadtime),
        hold_down=cfg.hold_down,
        fast_eviction=cfg.fast_eviction,
    )
