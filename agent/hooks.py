"""active_cmd / inactive_cmd: run an operator's program on a transition, safely.

No shell: the command line is split like a shell would (quotes), then executed directly,
with a timeout after which the process group is killed. Output and status are logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex

from .subproc import communicate

log = logging.getLogger(__name__)


async def run_hook(name: str, command: str | None, env: dict[str, str],
                   limit: float = 10.0) -> int | None:
    """Run ``command`` (None: nothing); return its exit status, None if it could not run."""
    if not command:
        return None
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        log.error("%s %r: cannot split: %s", name, command, exc)
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env={**os.environ, **env},
            start_new_session=True)
    except OSError as exc:
        log.error("%s %r: cannot start: %s", name, command, exc.strerror)
        return None
    try:
        out, _ = await communicate(proc, limit, group=True)
    except TimeoutError:
        log.error("%s %r: killed after %.0fs", name, command, limit)
        return None
    text = out.decode(errors="replace").strip()
    level = logging.INFO if proc.returncode == 0 else logging.WARNING
    log.log(level, "%s %r exited %d%s", name, command, proc.returncode,
            f": {text[-500:]}" if text else "")
    return proc.returncode
