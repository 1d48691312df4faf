"""``nodes/<node>``: a router's registration, bound to its lease (gone when it is)."""

from __future__ import annotations

from .base import Document


class ConfigRefusal(Document):
    """The newest stored config a router refused to run, and why."""

    WHAT = "config refusal"
    serial_no: int
    reason: str


class NodeRecord(Document):
    """What a running router says about itself. Records written before a field existed
    still decode (the field takes its default)."""

    WHAT = "node record"
    node: str = ""
    role: str
    address: str = ""
    pid: int | None = None
    version: str = ""
    started_at: str = ""
    dataplane: str = ""
    etcd: bool = True
    term: int = 0
    config_serial: int | None = None
    """serial_no of the config this router runs now (None: none yet, or not reported)."""
    config_refused: ConfigRefusal | None = None
    """The newest stored config this router refused to run, and why."""

    def runs(self, serial_no: int) -> bool:
        return self.config_serial == serial_no

    def refused(self, serial_no: int) -> ConfigRefusal | None:
        """The refusal of config ``serial_no``, if that is the one refused."""
        r = self.config_refused
        return r if r is not None and r.serial_no == serial_no else None
