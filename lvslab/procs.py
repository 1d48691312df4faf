"""Processes of the lab: started detached inside a namespace, logged, killed by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .netns import LabError, ns_exec, pid_in

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def env() -> dict[str, str]:
    """Our environment with the project importable (for ``python -m cluster...`` children),
    without the operator's ``LVS_*`` settings (the lab passes its own explicitly)."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("LVS_")}
    paths = [str(REPO), *filter(None, out.get("PYTHONPATH", "").split(os.pathsep))]
    out["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return out


def venv_tool(name: str) -> str:
    """A console script installed next to the running interpreter (the project venv)."""
    return str(Path(sys.executable).parent / name)


def start(ns: str, cmd: Sequence[str], log: Path, cwd: Path | None = None
          ) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in namespace ``ns``, in its own session, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            return subprocess.Popen(ns_exec(ns, *cmd), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=out, start_new_session=True, env=env(), cwd=cwd)
        except OSError as exc:
            raise LabError(f"cannot start {' '.join(cmd)} in {ns}: {exc}") from None


def wait_started(proc: subprocess.Popen[bytes], ns: str, log: Path,
                 within: float = 5.0) -> int:
    """Wait until ``proc`` runs inside ``ns`` (ip netns exec has exec'd it); its pid.

    ``LabError`` with the log's tail if it exits first.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"{' '.join(map(str, proc.args))} exited with {proc.returncode}:\n"
                           f"{tail(log)}")
        if pid_in(proc.pid, ns):
            return proc.pid
        time.sleep(0.01)
    raise LabError(f"process {proc.pid} did not enter {ns} within {within} s")


def kill(pid: int, ns: str, sig: int = signal.SIGKILL) -> bool:
    """Signal ``pid`` only if it still lives inside ``ns`` (never a reused pid elsewhere)."""
    if not pid_in(pid, ns):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    return True


def stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM ``proc`` (our child), SIGKILL it if it is still there after ``grace`` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_gone(pid: int, ns: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while pid_in(pid, ns):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def listening(pid: int, port: int) -> bool:
    """Whether a TCP socket listens on ``port`` in the network namespace of ``pid``."""
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 3 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_listening(proc: subprocess.Popen[bytes], port: int, what: str, log: Path,
                   within: float = 15.0) -> None:
    """Wait until ``proc`` listens on ``port``; ``LabError`` with the log's tail if not."""
    deadline = time.monotonic() + within
    while not listening(proc.pid, port):
        if proc.poll() is not None:
            raise LabError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise LabError(f"{what} is not listening on port {port} after {within} s:\n"
                           f"{tail(log)}")
        time.sleep(0.02)
