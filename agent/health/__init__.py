"""Health of the real servers: the policy as a pure core (:mod:`.core`) and the shell that
runs nanny and publishes through etcd (:mod:`.service`)."""

from .core import HealthCore, Outcome, Touched, Writes, decide, majority
from .service import TXN_OPS, HealthService

__all__ = ["TXN_OPS", "HealthCore", "HealthService", "Outcome", "Touched", "Writes", "decide",
           "majority"]
