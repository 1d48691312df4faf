"""``lvslab fault ...``: inject and remove faults in a running lab."""

from __future__ import annotations

import click

from . import faults
from .cli import _attach, _errors, _where, lab


def _routers(text: str) -> list[str]:
    return [n for n in text.split(",") if n]


@lab.group()
def fault() -> None:
    """Break the lab on purpose (every fault can be removed again)."""


def _one_host_fault(name: str, arg: str, method: str, done: str, doc: str) -> None:
    """Register ``lvslab fault NAME ARG``: ``Lab.<method>(ARG)``, then ``ARG: done``."""

    @fault.command(name, help=doc)
    @_where
    @click.argument(arg)
    @_errors
    def command(prefix: str, state_dir: str | None, **args: str) -> None:
        host = args[arg]
        getattr(_attach(prefix, state_dir), method)(host)
        click.echo(f"{host}: {done}")


_one_host_fault("cut-etcd", "router", "cut_etcd", "cut from etcd",
                "Drop ROUTER's traffic to and from every etcd member (routers still hear "
                "each other).")
_one_host_fault("restore-etcd", "router", "restore_etcd", "etcd reachable again",
                "Undo cut-etcd.")
_one_host_fault("cut-etcd-peers", "member", "cut_etcd_peers",
                "cut from the other etcd members",
                "Cut etcd MEMBER from the other members (routers and client still reach it).")
_one_host_fault("restore-etcd-peers", "member", "restore_etcd_peers",
                "back with the other etcd members", "Undo cut-etcd-peers.")


@fault.command()
@_where
@click.argument("side_a")
@click.argument("side_b")
@_errors
def partition(prefix: str, state_dir: str | None, side_a: str, side_b: str) -> None:
    """No heartbeats between routers SIDE_A and SIDE_B (comma lists, e.g. r1 r2,r3)."""
    _attach(prefix, state_dir).partition(_routers(side_a), _routers(side_b))
    click.echo(f"heartbeats cut between {side_a} and {side_b} (etcd still reachable)")


@fault.command()
@_where
@click.argument("side_a")
@click.argument("side_b")
@_errors
def heal(prefix: str, state_dir: str | None, side_a: str, side_b: str) -> None:
    """Undo partition (and one-way losses) between SIDE_A and SIDE_B."""
    _attach(prefix, state_dir).heal(_routers(side_a), _routers(side_b))
    click.echo(f"heartbeats restored between {side_a} and {side_b}")


@fault.command("drop-heartbeats")
@_where
@click.argument("sender")
@click.argument("receiver")
@_errors
def drop_heartbeats(prefix: str, state_dir: str | None, sender: str, receiver: str) -> None:
    """RECEIVER stops hearing SENDER's heartbeats (one direction only)."""
    _attach(prefix, state_dir).drop_heartbeats(sender, receiver)
    click.echo(f"{receiver} no longer hears {sender}")


@fault.command("restore-heartbeats")
@_where
@click.argument("sender")
@click.argument("receiver")
@_errors
def restore_heartbeats(prefix: str, state_dir: str | None, sender: str, receiver: str) -> None:
    """Undo drop-heartbeats."""
    _attach(prefix, state_dir).restore_heartbeats(sender, receiver)
    click.echo(f"{receiver} hears {sender} again")


@fault.command()
@_where
@click.argument("host")
@_errors
def isolate(prefix: str, state_dir: str | None, host: str) -> None:
    """Set every link of HOST down (its processes keep running)."""
    _attach(prefix, state_dir).isolate(host)
    click.echo(f"{host}: links down")


@fault.command()
@_where
@click.argument("host")
@_errors
def reconnect(prefix: str, state_dir: str | None, host: str) -> None:
    """Undo isolate."""
    _attach(prefix, state_dir).reconnect(host)
    click.echo(f"{host}: links up")


@fault.command("clear")
@_where
@_errors
def clear(prefix: str, state_dir: str | None) -> None:
    """Remove every fault in the lab."""
    _attach(prefix, state_dir).clear_faults()
    click.echo("all faults removed")


@fault.command("list")
@_where
@_errors
def list_(prefix: str, state_dir: str | None) -> None:
    """Faults in place, per host."""


    active = faults.active(_attach(prefix, state_dir).topology)
    for host, items in active.items():
        click.echo(f"{host}: {', '.join(items)}")
    if not active:
        click.echo("no faults")
