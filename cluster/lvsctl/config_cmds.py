"""lvsctl config: validate, push, show, diff and history of the cluster's lvs.cf."""

from __future__ import annotations

import asyncio
import difflib
import gc
import json
from pathlib import Path

import click

from .. import lvscf
from ..config_diff import changes
from ..documents import ClusterState
from ..etcd.client import Etcd
from ..etcd.watch import PrefixWatch, Snapshot
from ..model import LvsConfig
from ..rollout import Rollout, rollout
from ..store import ConfigStore, StoredConfig
from .common import Ctx, Failure, echo_json, output_option, run


@click.group()
def config() -> None:
    """Validate, store and inspect the cluster configuration (lvs.cf)."""
    # Each of these commands runs once and exits: the collector, which went over every
    # object of a 40,000-server config again and again (40 % of its parse), has nothing
    # to gain here. (Long-running commands, `web` and `watch`, keep it.)
    gc.disable()


def _load(path: str) -> tuple[LvsConfig, str]:
    """Parse FILE; print warnings; fail with every problem (reading it, or reasons it cannot
    run) as FILE:LINE: message."""
    result = lvscf.parse_file(path, runnable=True)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if result.config is None:
        for problem in result.errors:
            click.echo(str(problem), err=True)
        n = len(result.errors)
        raise Failure(f"{path}: {n} error{'s' if n != 1 else ''}, nothing done")
    return result.config, Path(path).read_text(encoding="utf-8", errors="replace")


@config.command()
@click.argument("file", type=click.Path(dir_okay=False))
@output_option()
def validate(file: str, output: str) -> None:
    """Check FILE without touching etcd: it reads, and the routers can run it."""
    cfg, _ = _load(file)
    nv = len(cfg.virtuals)
    ns = sum(len(v.servers) for v in cfg.virtuals)
    if output == "json":
        echo_json({"file": file, "ok": True, "serial_no": cfg.serial_no,
                   "routers": len(cfg.effective_routers()), "virtuals": nv, "servers": ns})
        return
    click.echo(f"{file}: OK (serial_no {cfg.serial_no}, {len(cfg.effective_routers())} routers, "
               f"{nv} virtual services, {ns} real servers)")


@config.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="store even if serial_no is not newer")
@click.option("--wait", is_flag=True, help="then wait until every live router runs it "
              "(exit status 1 if one refuses it, or on timeout)")
@click.option("--timeout", "wait_s", default=30.0, show_default=True, metavar="S",
              help="seconds --wait waits")
@output_option()
@click.pass_obj
@run
async def push(ctx: Ctx, file: str, force: bool, wait: bool, wait_s: float,
               output: str) -> None:
    """Validate FILE, then store it atomically as the cluster's configuration."""
    cfg, source = _load(file)
    async with ctx.connect() as etcd:
        result = await ConfigStore(etcd, ctx.keys).push(cfg, source, force=force,
                                                        checked=True)
        old = result.previous.serial_no if result.previous else None
        if output == "json":
            echo_json({"cluster": ctx.cluster, "serial_no": cfg.serial_no, "previous": old,
                       "changes": result.changes, "seed_created": result.seed_created,
                       "pushed_at": result.stored.pushed_at,
                       "pushed_by": result.stored.pushed_by,
                       "parts": len(result.stored.parts), "parts_written": result.written[0],
                       "bytes_written": result.written[1]})
            if wait:
                await _wait_rollout(ctx, etcd, cfg.serial_no, wait_s, quiet=True)
            return
        click.echo(f"stored serial_no {cfg.serial_no} in cluster {ctx.cluster}"
                   + (f" (was {old})" if old is not None else ""))
        for line in result.changes:
            click.echo(f"  {line}")
        parts, nbytes = result.written
        total = len(result.stored.parts)
        click.echo(f"wrote {parts} parts ({nbytes / 1024:.0f} KiB)" + (
            f"; the other {total - parts} were there" if parts < total else ""))
        if result.previous is not None and not result.changes:
            click.echo("  no change besides serial_no")
        if result.seed_created:
            click.echo("created the cluster's hash seed (the routers' mh tables; lvsctl seed)")
        elif result.seed is not None and result.seed.junk is not None:
            click.echo(f"warning: the hash seed in etcd is junk ({result.seed.junk}); routers "
                       "use the cluster's default; 'lvsctl seed --new --yes' writes a new one",
                       err=True)
        if wait:
            await _wait_rollout(ctx, etcd, cfg.serial_no, wait_s)


async def _wait_rollout(ctx: Ctx, etcd: Etcd, serial: int, wait_s: float,
                        quiet: bool = False) -> None:
    """Until every live router reports running ``serial``, or one reports refusing it."""
    state = ClusterState(ctx.keys)

    async def follow() -> Rollout:
        nonlocal state
        async for update in PrefixWatch(etcd, ctx.keys.nodes_prefix):
            if isinstance(update, Snapshot):
                state = ClusterState.from_kvs(ctx.keys, update.items.values())
            else:
                for change in update:
                    state.apply(change.key, change.kv)
            ro = rollout(state, serial)
            if ro.done or ro.refused:
                return ro
        raise AssertionError("unreachable")

    try:
        ro = await asyncio.wait_for(follow(), wait_s)
    except TimeoutError:
        ro = rollout(state, serial)
        late = ", ".join(f"{n} ({ro.behind[n]})" for n in ro.pending)
        raise Failure(f"serial_no {serial} not running after {wait_s:g}s on: {late}") from None
    if ro.refused:
        for name, refusal in ro.refused.items():
            click.echo(f"{name} refused serial_no {serial}: {refusal.reason}", err=True)
        raise Failure(f"serial_no {serial} refused by {', '.join(ro.refused)} "
                      "(the routers keep running their current config)")
    if quiet:
        return
    if not ro.running:
        click.echo("no router is running (none registered): nothing to wait for")
    else:
        click.echo(f"serial_no {serial} runs on every live router: {', '.join(ro.running)}")


async def _stored(ctx: Ctx) -> StoredConfig:
    async with ctx.connect() as etcd:
        stored = await ConfigStore(etcd, ctx.keys).load()
    if stored is None:
        raise Failure(f"cluster {ctx.cluster} has no configuration yet (lvsctl config push)")
    return stored


@config.command()
@click.option("-o", "--output", type=click.Choice(["cf", "json"]), default="cf",
              show_default=True)
@click.option("--source", is_flag=True, help="the lvs.cf text exactly as pushed")
@click.pass_obj
@run
async def show(ctx: Ctx, output: str, source: bool) -> None:
    """Print the stored configuration (canonical lvs.cf, the pushed text, or JSON)."""
    stored = await _stored(ctx)
    if output == "json":
        click.echo(json.dumps(stored.config.model_dump(mode="json"), indent=2))
    elif source:
        click.echo(stored.source, nl=False)
    else:
        click.echo(f"# cluster {ctx.cluster}: pushed {stored.pushed_at} by {stored.pushed_by}")
        click.echo(lvscf.write(stored.config), nl=False)


@config.command()
@click.argument("file", type=click.Path(dir_okay=False))
@output_option()
@click.pass_obj
@run
async def diff(ctx: Ctx, file: str, output: str) -> None:
    """Show what pushing FILE would change (exit status 1 if anything would)."""
    cfg, _ = _load(file)
    stored = await _stored(ctx)
    lines = changes(stored.config, cfg)
    if output == "json":
        echo_json({"stored_serial_no": stored.serial_no, "serial_no": cfg.serial_no,
                   "changes": lines})
        if lines:
            raise SystemExit(1)
        return
    if not lines:
        click.echo("no changes")
        return
    for line in lines:
        click.echo(line)
    text = difflib.unified_diff(lvscf.write(stored.config).splitlines(),
                                lvscf.write(cfg).splitlines(),
                                f"stored (serial_no {stored.serial_no})", file, lineterm="")
    click.echo("")
    for line in text:
        click.echo(line)
    raise SystemExit(1)


@config.command()
@output_option()
@click.pass_obj
@run
async def history(ctx: Ctx, output: str) -> None:
    """Past pushes of the configuration, oldest first (also in lvsctl history)."""
    async with ctx.connect() as etcd:
        entries = await ConfigStore(etcd, ctx.keys).history()
    if output == "json":
        echo_json([e.model_dump(mode="json") for e in entries])
        return
    for e in entries:
        click.echo(f"{e.pushed_at or '?'}  serial_no {e.serial_no}  by {e.pushed_by or '?'}")
        for line in e.changes:
            click.echo(f"    {line}")


@config.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("-o", "--output", type=click.Choice(["cf", "json"]), default="cf",
              show_default=True, help="lvs.cf, or the same configuration as JSON")
@click.option("-w", "--write", "write", type=click.Path(dir_okay=False),
              help="write it to this file (default: standard output)")
@click.option("--serial", "serial_no", default=1, show_default=True, type=click.IntRange(0),
              help="serial_no of the result")
@click.option("--address", "addresses", multiple=True, metavar="IP",
              help="a router's address, for files without unicast_src_ip (multicast "
              "VRRP): once per file, in the order of the files")
def import_(files: tuple[str, ...], output: str, write: str | None, serial_no: int,
            addresses: tuple[str, ...]) -> None:
    """Convert keepalived.conf FILES (one per router) into lvs.cf, strictly: every keyword
    lvs.cf cannot carry is an error as FILE:LINE (docs/migrating.md). No etcd needed."""
    from ..keepalived import convert

    texts = [(f, Path(f).read_text(encoding="utf-8", errors="replace")) for f in files]
    result = convert(texts, serial_no=serial_no, addresses=addresses)
    for line in result.warnings:
        click.echo(line, err=True)
    if result.text is None:
        for line in result.errors:
            click.echo(line, err=True)
        n = len(result.errors)
        raise Failure(f"{n} error{'s' if n != 1 else ''}: no lvs.cf written")
    text = result.text
    if output == "json":
        cfg = lvscf.parse(text, "lvs.cf").config
        assert cfg is not None  # convert() checked it with our own reader
        text = json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n"
    if write:
        Path(write).write_text(text)
        click.echo(f"{write}: written ({', '.join(files)})", err=True)
    else:
        click.echo(text, nl=False)
