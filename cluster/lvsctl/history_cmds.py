"""lvsctl history / events: the cluster's failovers, switchovers, health transitions and
config pushes, kept in etcd (cluster/history.py); ``events -f`` follows them as they
happen (an etcd watch, no polling)."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..history import KINDS, Event, read_history, watch_events
from .common import Ctx, run

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w``, ``1h30m`` (or plain seconds) as seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (e.g. 30s, 15m, 2h, 7d, 1h30m)")
    return total


def _since(_: click.Context, __: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


KIND_COLOURS = {"failover": "red", "switchover": "yellow", "health": "cyan", "config": "green"}


def plain_line(e: Event) -> str:
    """One event as a line of plain text: when, kind, who, what."""
    return f"{e.at or '?'}  {e.kind:<10}  {e.who or '?'}  {e.summary()}"


def table(events: Iterable[Event]) -> Table:
    """Events as a table with colours, for a terminal."""
    t = Table("when (UTC)", "kind", "who", "what", "gap", title="history", title_justify="left")
    for e in events:
        d = e.doc
        what = escape(e.summary().split("; gap ")[0])
        if e.kind == "health":
            state = getattr(d, "state", "")
            colour = {"up": "green", "down": "red"}.get(state, "yellow")
            what = what.replace(f"-> {state}", f"-> [{colour}]{state}[/]", 1)
        gap = "" if e.gap_ms is None else f"{e.gap_ms} ms"
        t.add_row(e.at.replace("T", " ").rstrip("Z"),
                  f"[{KIND_COLOURS.get(e.kind, 'white')}]{e.kind}[/]", escape(e.who), what, gap)
    return t


def _kinds_option(f: object) -> object:
    return click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS),
                        help="only events of this kind (repeatable)")(f)  # type: ignore


@click.command()
@_kinds_option
@click.option("--since", metavar="DURATION", callback=_since,
              help="only events of the last DURATION (30s, 15m, 2h, 7d, 1h30m)")
@click.option("-n", "limit", default=50, show_default=True, metavar="N",
              help="the newest N events (0: every one kept)")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_obj
@run
async def history(ctx: Ctx, kinds: tuple[str, ...], since: float | None, limit: int,
                  output: str) -> None:
    """Failovers, switchovers, health transitions and config pushes, oldest first: who,
    when, why, and the gap the new active saw."""
    async with ctx.connect() as etcd:
        h = await read_history(etcd, ctx.keys, max(0, limit), kinds=kinds or None,
                               since=None if since is None else time.time() - since)
    if output == "json":
        click.echo(json.dumps({"cluster": ctx.cluster, "revision": h.revision,
                               "events": [e.to_json() for e in h.events], "junk": h.junk},
                              indent=2))
        return
    for line in h.junk:
        click.echo(f"lvsctl: not understood: {line}", err=True)
    if sys.stdout.isatty():
        console = Console()
        if h.events:
            console.print(table(h.events))
        else:
            console.print("no events" + (" of that kind" if kinds else "")
                          + (" in that time" if since is not None else ""))
        return
    for e in h.events:
        click.echo(plain_line(e))


@click.command()
@_kinds_option
@click.option("-f", "--follow", is_flag=True, help="then print new events as they happen "
              "(an etcd watch), until interrupted")
@click.option("-n", "limit", default=10, show_default=True, metavar="N",
              help="first the newest N events")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one object per line")
@click.pass_obj
@run
async def events(ctx: Ctx, kinds: tuple[str, ...], follow: bool, limit: int,
                 output: str) -> None:
    """The newest events, and with -f every new one as it happens (like tail -f)."""
    console = Console(highlight=False) if sys.stdout.isatty() and output == "text" else None

    def show(e: Event) -> None:
        if output == "json":
            click.echo(json.dumps(e.to_json()))
        elif console is not None:
            colour = KIND_COLOURS.get(e.kind, "white")
            console.print(f"{escape(e.at or '?')}  [{colour}]{e.kind:<10}[/]  "
                          f"{escape(e.who or '?')}  {escape(e.summary())}")
        else:
            click.echo(plain_line(e))
        sys.stdout.flush()

    async with ctx.connect() as etcd:
        h = await read_history(etcd, ctx.keys, max(1, limit), kinds=kinds or None)
        for e in h.events if limit > 0 else []:
            show(e)
        if not follow:
            return
        async for e in watch_events(etcd, ctx.keys, after_revision=h.revision,
                                    kinds=kinds or None):
            show(e)
