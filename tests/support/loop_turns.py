"""Count the event loop's turns while a coroutine runs: proof that it let the loop run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Turns:
    count = 0


@contextlib.asynccontextmanager
async def counting() -> AsyncIterator[Turns]:
    """``async with counting() as turns:`` ... ``turns.count`` turns the loop took."""
    turns = Turns()

    async def count() -> None:
        while True:
            turns.count += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(count())
    await asyncio.sleep(0)
    turns.count = 0  # only the turns taken inside the block
    try:
        yield turns
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
