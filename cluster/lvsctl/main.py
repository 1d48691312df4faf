"""lvsctl: the operator's tool. Global options, and every command registered in one place."""

from __future__ import annotations

import logging
import os
import sys

import click

from ..keys import check_cluster_name
from . import (
    admin_cmds,
    config_cmds,
    control_cmds,
    history_cmds,
    seed_cmd,
    status_cmd,
    watch_cmd,
    web_cmd,
)
from .common import Ctx


def _cluster(_: click.Context, __: click.Parameter, value: str) -> str:
    try:
        return check_cluster_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--etcd", "etcd_url", metavar="URLS", envvar="LVS_ETCD",
              help="etcd endpoints, comma-separated (env LVS_ETCD; default http://127.0.0.1:2379)")
@click.option("--cluster", default="default", show_default=True, envvar="LVS_CLUSTER",
              callback=_cluster, help="cluster name: keys live under /lvs/<cluster>/ "
              "(env LVS_CLUSTER)")
@click.option("--etcd-ca", envvar="LVS_ETCD_CA", help="CA certificate (PEM) for etcd TLS")
@click.option("--etcd-cert", envvar="LVS_ETCD_CERT", help="client certificate (PEM)")
@click.option("--etcd-key", envvar="LVS_ETCD_KEY", help="client key (PEM)")
@click.option("--etcd-user", envvar="LVS_ETCD_USER", help="etcd user name")
@click.option("--etcd-password", envvar="LVS_ETCD_PASSWORD", help="etcd password")
@click.option("--timeout", default=5.0, show_default=True, help="seconds per etcd request")
@click.option("-v", "--verbose", count=True, help="log more (-vv for debug)")
@click.pass_context
def cli(ctx: click.Context, etcd_url: str | None, cluster: str, etcd_ca: str | None,
        etcd_cert: str | None, etcd_key: str | None, etcd_user: str | None,
        etcd_password: str | None, timeout: float, verbose: int) -> None:
    """Operate a Piranha LVS cluster whose state lives in etcd."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Ctx(etcd_url, cluster, {
        "ca": etcd_ca, "cert": etcd_cert, "key": etcd_key, "user": etcd_user,
        "password": etcd_password, "timeout": timeout, "environ": dict(os.environ)})


for _command in (config_cmds.config, status_cmd.status, control_cmds.switchover,
                 admin_cmds.drain, admin_cmds.disable, admin_cmds.enable, seed_cmd.seed,
                 history_cmds.history, history_cmds.events, watch_cmd.watch,
                 web_cmd.web):
    cli.add_command(_command)


def main() -> None:
    """Console entry point."""
    cli.main(prog_name="lvsctl")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
