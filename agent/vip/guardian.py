"""The VIP guardian: a child process that removes our VIPs the moment the agent dies.

The agent tells the guardian, over a pipe, which VIPs it holds. When the pipe reaches
end-of-file without a final "hold nothing" - the agent was killed, crashed, ran out of
memory - the guardian deletes those addresses at once and exits. The kernel's address
lifetime stays as the backstop for when both processes die (docs/vip.md).

The guardian runs in a session of its own, so a signal to the agent's process group does
not reach it; it needs nothing but the pipe and netlink.

    python -m agent.vip.guardian      # started by Guardian.start(); reads JSON lines
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Iterable

from .model import Vip

log = logging.getLogger(__name__)


class Guardian:
    """The agent's side: start the child, tell it what we hold, stop it cleanly."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self.held: tuple[Vip, ...] = ()

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.vip.guardian", stdin=asyncio.subprocess.PIPE,
            start_new_session=True)

    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def hold(self, vips: Iterable[Vip]) -> None:
        """From now on, on our death, remove exactly ``vips``."""
        self.held = tuple(sorted(vips))
        if not self.running():
            await self.start()
        assert self._proc is not None and self._proc.stdin is not None
        line = json.dumps([[v.ip, v.prefixlen, v.interface] for v in self.held])
        try:
            self._proc.stdin.write(line.encode() + b"\n")
            await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            log.error("VIP guardian died; starting a new one")
            self._proc = None
            await self.hold(self.held)

    async def close(self) -> None:
        """Hold nothing, then let the guardian exit."""
        if not self.running():
            return
        assert self._proc is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await self.hold(())
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 5)
        except TimeoutError:
            self._proc.kill()


def _remove(held: list[list[object]]) -> None:
    """Delete every held address (whatever happens to the others)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for ip, prefixlen, interface in held:
            try:
                index = ipr.link_lookup(ifname=interface)
                if index:
                    ipr.addr("del", index=index[0], address=ip, prefixlen=prefixlen)
                    print(f"guardian: removed {ip}/{prefixlen} from {interface}",
                          file=sys.stderr)
            except Exception as exc:
                print(f"guardian: {ip}/{prefixlen} on {interface}: {exc}", file=sys.stderr)


def main() -> None:
    """Read the held set line by line; on end-of-file remove what is still held."""
    import pyroute2  # noqa: F401 - imported now, so removal at EOF is immediate

    held: list[list[object]] = []
    for line in sys.stdin:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, list):
            held = value
    if held:
        print("guardian: the agent is gone while holding VIPs", file=sys.stderr)
        _remove(held)


if __name__ == "__main__":
    main()
