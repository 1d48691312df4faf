"""``nodes/<node>``: a router's registration, bound to its lease (gone when it is)."""

from __future__ import annotations

from .base import Document


class ConfigRefusal(Document):
    """The newest stored config a router refused to run, and why."""

    WHAT = "config refusal"
    serial_no: int
    """serial_no of the refused config."""
    reason: str
    """Why it cannot run on this router."""


class NodeRecord(Document):
    """What a running router says about itself. Records written before a field existed
    still decode (the field takes its default)."""

    WHAT = "node record"
    node: str = ""
    """The router's name (also in the key)."""
    role: str
    """`backup`, `candidate`, `active`, or `starting` before its first config."""
    address: str = ""
    """Its address in lvs.cf."""
    pid: int | None = None
    """Process id of its agent."""
    version: str = ""
    """Version of its agent."""
    started_at: str = ""
    """When its agent started (UTC)."""
    dataplane: str = ""
    """The data plane it programs (`nftables`, `ipvs`)."""
    etcd: bool = True
    """It reaches etcd (always true when written)."""
    term: int = 0
    """The term it holds the leader key for; 0 when it holds none."""
    config_serial: int | None = None
    """serial_no of the config it runs now; null before it runs one."""
    config_refused: ConfigRefusal | None = None
    """The newest stored config it refused to run, and why; null when it refused none."""
    metrics: str = ""
    """HOST:PORT of its Prometheus metrics (`lvsctl web` reads them); "" when not served."""

    def runs(self, serial_no: int) -> bool:
        return self.config_serial == serial_no

    def refused(self, serial_no: int) -> ConfigRefusal | None:
        """The refusal of config ``serial_no``, if that is the one refused."""
        r = self.config_refused
        return r if r is not None and r.serial_no == serial_no else None
