"""lvsctl web: the live status page (cluster/web)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .common import Ctx, Failure, run


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise Failure(f"--listen {value!r}: expected HOST:PORT (e.g. 127.0.0.1:8080)")
    return host.strip("[]") or "127.0.0.1", int(port)


def _token(path: str | None) -> str | None:
    if path is not None:
        try:
            text = Path(path).read_text().strip()
        except OSError as exc:
            raise Failure(f"--token-file {path}: {exc.strerror}") from None
        if len(text) < 16:
            raise Failure(f"--token-file {path}: the token must have at least 16 characters")
        return text
    env = os.environ.get("LVS_WEB_TOKEN", "").strip()
    return env or None


@click.command()
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="address to serve the page on (only that address)")
@click.option("--allow-actions", is_flag=True,
              help="offer drain, disable, enable and switchover (needs a token)")
@click.option("--token-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="the token actions need (default: $LVS_WEB_TOKEN)")
@click.pass_obj
@run
async def web(ctx: Ctx, listen: str, allow_actions: bool, token_file: str | None) -> None:
    """Serve a live status page of the cluster (read-only unless --allow-actions)."""
    host, port = _listen(listen)
    token = _token(token_file)
    if allow_actions and token is None:
        raise Failure("--allow-actions needs a token: --token-file FILE or $LVS_WEB_TOKEN")
    from ..web.feed import Feed  # aiohttp: imported by this command only (0.2 s)
    from ..web.server import serve

    async with ctx.connect() as etcd:
        feed = Feed(etcd, ctx.keys, actions=allow_actions)
        click.echo(f"status page of cluster {ctx.cluster} on http://{listen}/ "
                   f"({'actions allowed' if allow_actions else 'read-only'})")
        await serve(feed, etcd, ctx.keys, host, port, token if allow_actions else None)
