"""nanny: health checks of real servers, inside the pulse agent (asyncio).

Piranha's nanny semantics (connect, send/expect, send_program, reentry) plus the check kinds
keepalived offers (HTTP/HTTPS, UDP, DNS, external with dynamic weight). See docs/nanny.md.
"""

from agent.nanny.checks import run_check
from agent.nanny.engine import Engine, EngineStats
from agent.nanny.result import CheckResult
from agent.nanny.spec import CheckSpec, SpecError, piranha_check
from agent.nanny.state import State, StateSpec, StateSpecError, Tracked, Transition
from cluster.health import Health

__all__ = [
    "CheckResult", "CheckSpec", "Engine", "EngineStats", "Health", "SpecError", "State",
    "StateSpec", "StateSpecError", "Tracked", "Transition", "piranha_check", "run_check",
]
