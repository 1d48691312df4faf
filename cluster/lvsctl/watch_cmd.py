"""lvsctl watch: ``lvsctl status`` kept current by one etcd watch (no polling), with the
newest events of the cluster's history under it.

On a terminal it redraws in place (rich.live); otherwise it prints the whole status again
after each change (plain text), or one JSON object per change with ``-o json``. Bursts of
changes are drawn at most :data:`REDRAW_EVERY` apart.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live

from ..documents import ClusterState, DocumentError
from ..etcd.client import KV, Etcd
from ..etcd.watch import PrefixWatch, Snapshot
from ..history import Event, decode_event, kind_of
from ..keys import Keys
from ..status import ClusterStatus
from .common import Ctx, run
from .history_cmds import plain_line, table
from .status_cmd import renderables

REDRAW_EVERY = 0.25  # seconds: at most four redraws a second, however busy etcd is


@dataclass
class Watched:
    """The cluster as one watch of its prefix shows it: typed state and recent events."""

    keys: Keys
    events_kept: int = 5
    state: ClusterState = field(init=False)
    revision: int = 0
    events: deque[Event] = field(init=False)

    def __post_init__(self) -> None:
        self.state = ClusterState(self.keys)
        self.events = deque(maxlen=max(1, self.events_kept))

    def snapshot(self, snap: Snapshot) -> None:
        self.state = ClusterState.from_kvs(self.keys, snap.items.values())
        self.revision = snap.revision
        self.events.clear()
        for kv in sorted((kv for kv in snap.items.values() if kind_of(self.keys, kv.key)),
                         key=lambda kv: (kv.create_revision, kv.key)):
            self._event(kv)

    def change(self, key: str, kv: KV | None, revision: int) -> None:
        self.state.apply(key, kv)
        self.revision = max(self.revision, revision)
        if kv is not None and kv.version == 1 and kind_of(self.keys, key):
            self._event(kv)

    def _event(self, kv: KV) -> None:
        try:
            self.events.append(decode_event(self.keys, kv))
        except DocumentError:
            pass  # lvsctl history lists it

    @property
    def status(self) -> ClusterStatus:
        return ClusterStatus(self.keys.cluster, self.revision, self.state)

    def to_json(self) -> dict[str, Any]:
        return {**self.status.to_json(), "events": [e.to_json() for e in self.events]}

    def view(self) -> RenderableType:
        parts = renderables(self.status)
        if self.events_kept > 0 and self.events:
            parts.append(table(self.events))
        return Group(*parts)


async def follow(etcd: Etcd, keys: Keys, watched: Watched, changed: asyncio.Event) -> None:
    """Keep ``watched`` current from one watch of the cluster prefix."""
    async for update in PrefixWatch(etcd, keys.prefix):
        if isinstance(update, Snapshot):
            watched.snapshot(update)
        else:
            for c in update:
                watched.change(c.key, c.kv, c.revision)
        changed.set()


@click.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="json: one status object per change")
@click.option("--events", "n_events", default=5, show_default=True, metavar="N",
              help="the newest N events of the history under the status (0: none)")
@click.pass_obj
@run
async def watch(ctx: Ctx, output: str, n_events: int) -> None:
    """A live view of the cluster: lvsctl status, redrawn as etcd changes (until ^C)."""
    watched = Watched(ctx.keys, n_events)
    changed = asyncio.Event()
    tty = sys.stdout.isatty() and output == "table"
    async with ctx.connect() as etcd:
        task = asyncio.create_task(follow(etcd, ctx.keys, watched, changed))
        try:
            if tty:
                console = Console()
                with Live(console=console, auto_refresh=False, screen=False) as live:
                    while True:
                        await _next(changed, task)
                        live.update(watched.view(), refresh=True)
            else:
                console = Console(width=160, no_color=True, highlight=False)
                while True:
                    await _next(changed, task)
                    if output == "json":
                        click.echo(json.dumps(watched.to_json()))
                    else:
                        console.print(f"--- revision {watched.revision}")
                        for part in renderables(watched.status):
                            console.print(part)
                        for e in watched.events if n_events > 0 else ():
                            click.echo(plain_line(e))
                    sys.stdout.flush()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _next(changed: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Until something changed (then a pause, so that a burst is drawn once)."""
    waiter = asyncio.create_task(changed.wait())
    done, _ = await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()  # the watch failed: its error ends the command
        raise AssertionError("unreachable: the watch never ends")
    await asyncio.sleep(REDRAW_EVERY)
    changed.clear()  # what changed meanwhile is in this drawing
