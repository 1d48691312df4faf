"""systemd's notify protocol (sd_notify(3)), for ``Type=notify`` and ``WatchdogSec=``.

One unix datagram socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
namespace); every message is ``KEY=value`` lines in one datagram. Sends never block and
never fail the agent: a full or gone socket drops the message (counted, logged once).
Without ``$NOTIFY_SOCKET`` (not run by systemd) every call is a no-op.

The agent's main loop calls :meth:`Notifier.tick` on every turn and wakes for it at the
latest after :meth:`Notifier.due_in`: before READY it sends ``EXTEND_TIMEOUT_USEC`` (a start
that waits, alive, for its first config is not killed by ``TimeoutStartSec``; one that hangs
is), after it ``WATCHDOG=1`` every half ``$WATCHDOG_USEC``. A stalled loop stops both, so
systemd restarts the agent.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, MutableMapping

log = logging.getLogger(__name__)

#: Seconds between keep-alives before READY when systemd set no watchdog.
START_KEEPALIVE = 5.0
#: Each keep-alive before READY extends the start timeout by this many of its intervals.
START_EXTEND_INTERVALS = 4


def socket_address(name: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as a ``sendto`` address: ``@x`` is the abstract name ``\\0x``."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def watchdog_interval(environ: MutableMapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None when
    systemd watches no process or another one (``$WATCHDOG_PID``)."""
    owner = environ.get("WATCHDOG_PID")
    if owner and owner.strip() != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Notifier:
    """Talks to systemd if it listens; see the module docstring."""

    def __init__(self, address: str | None, watchdog: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.address = socket_address(address) if address else None
        self.watchdog = watchdog
        self.clock = clock
        self.ready = False
        self.stopping = False
        self.sent = 0
        self.dropped = 0
        self.status: str | None = None
        self._next = clock()
        self._sock: socket.socket | None = None
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM
                                       | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """From ``$NOTIFY_SOCKET`` / ``$WATCHDOG_USEC`` / ``$WATCHDOG_PID``, which are then
        removed from the environment (our children, hooks and checks, must not speak for us)."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog = watchdog_interval(env, os.getpid()) if address else None
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def keepalive(self) -> float | None:
        """Seconds between keep-alives now (None: none to send)."""
        if not self.enabled:
            return None
        if self.ready:
            return self.watchdog
        return min(self.watchdog or START_KEEPALIVE, START_KEEPALIVE)

    def send(self, *fields: str) -> bool:
        """One datagram of ``KEY=value`` lines; False if nobody listens or it was dropped."""
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:  # full (EAGAIN), gone (ENOENT, ECONNREFUSED): never fatal
            self.dropped += 1
            if self.dropped == 1:
                log.warning("sd_notify: cannot send to %s: %s", self.address, exc)
            return False
        self.sent += 1
        return True

    def set_status(self, text: str) -> None:
        """``STATUS=text`` (only when it changed)."""
        text = " ".join(text.split())  # one line
        if text != self.status:
            self.status = text
            self.send(f"STATUS={text}")

    def set_ready(self, status: str) -> None:
        """``READY=1`` with a status, once."""
        if self.ready or self.stopping:
            return
        self.ready = True
        self.status = " ".join(status.split())
        fields = ["READY=1", f"STATUS={self.status}"]
        if self.watchdog is not None:
            fields.append("WATCHDOG=1")
            self._next = self.clock() + self.watchdog
        self.send(*fields)

    def set_stopping(self, status: str = "stopping") -> None:
        """``STOPPING=1``, once."""
        if not self.stopping:
            self.stopping = True
            self.status = status
            self.send("STOPPING=1", f"STATUS={status}")

    def due_in(self, now: float) -> float:
        """Seconds until :meth:`tick` has something to send (inf: never)."""
        every = self.keepalive
        return float("inf") if every is None else max(0.0, self._next - now)

    def tick(self, now: float) -> None:
        """From the main loop: the keep-alive if due (see the module docstring)."""
        every = self.keepalive
        if every is None or now < self._next:
            return
        self._next = now + every
        if self.ready:
            self.send("WATCHDOG=1")
        else:
            extend = int(every * START_EXTEND_INTERVALS * 1e6)
            self.send(f"EXTEND_TIMEOUT_USEC={extend}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
