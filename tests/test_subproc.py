"""A child process given a time limit is killed and reaped on the limit or a cancellation
(real processes): none is left behind as a zombie or a stray transport."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.subproc import communicate


async def sleeper(*argv: str, group: bool = False) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=group)


def gone(pid: int, within: float = 3.0) -> bool:
    """``pid`` exited (no such process, or a zombie of somebody else's) within ``within``."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


async def test_the_answer_within_the_limit() -> None:
    proc = await sleeper("sh", "-c", "cat; echo done >&2")
    out, err = await communicate(proc, 5, b"hello")
    assert (out, err, proc.returncode) == (b"hello", b"done\n", 0)


async def test_on_the_limit_the_child_is_killed_and_reaped() -> None:
    proc = await sleeper("sleep", "30")
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await communicate(proc, 0.2)
    assert proc.returncode == -9 and time.monotonic() - start < 5


async def test_a_cancelled_caller_leaves_no_child() -> None:
    proc = await sleeper("sleep", "30")
    task = asyncio.create_task(communicate(proc, 30))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert proc.returncode == -9  # reaped before the cancellation went on


async def test_a_group_is_killed_whole(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    proc = await sleeper("sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait", group=True)
    with pytest.raises(TimeoutError):
        await communicate(proc, 0.5, group=True)
    assert proc.returncode is not None
    assert gone(int(pidfile.read_text())), "the grandchild outlived the kill"


async def test_a_group_is_killed_even_after_its_leader_exited(tmp_path: Path) -> None:
    """The leader is gone at once; its child keeps the output pipe open: the answer never
    comes, and the group kill must still reach the child."""
    pidfile = tmp_path / "pid"
    proc = await sleeper("sh", "-c", f"sleep 30 & echo $! > {pidfile}", group=True)
    async with asyncio.timeout(5):  # (wait() would wait for the pipes too: Python 3.11)
        while proc.returncode is None:
            await asyncio.sleep(0.02)
    with pytest.raises(TimeoutError):
        await communicate(proc, 0.5, group=True)
    assert gone(int(pidfile.read_text())), "the leader's child outlived the kill"
