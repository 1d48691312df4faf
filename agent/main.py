"""``pulse``: the router agent's command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from cluster.bulk import limit_arenas
from cluster.etcd.client import EtcdAuthError
from cluster.etcd.settings import SettingsError, settings_from
from cluster.keys import check_cluster_name
from cluster.model import ConfigError

from .dataplane.select import BackendUnavailable
from .heartbeat import BindError
from .heartbeat import ConfigError as HeartbeatConfigError


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "max_content_width": 100})
@click.option("--etcd", "etcd_url", metavar="URLS", envvar="LVS_ETCD",
              help="etcd endpoints, comma-separated (env LVS_ETCD)")
@click.option("--cluster", default="default", show_default=True, envvar="LVS_CLUSTER")
@click.option("--node", required=True, envvar="LVS_NODE",
              help="this router's name: a router block (or primary/backup) of the config")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="bootstrap lvs.cf, used only while etcd holds no config (never pushed)")
@click.option("--dataplane", type=click.Choice(["auto", "ipvs", "nftables"]), default="auto",
              show_default=True)
@click.option("--metrics-address", metavar="HOST:PORT",
              help="serve Prometheus metrics here (default: none)")
@click.option("--metrics-max-servers", type=click.IntRange(0), default=10000,
              show_default=True, metavar="N",
              help="past N real servers, no series per real server (per virtual service "
              "only); 0: always")
@click.option("--heartbeat-key-file", envvar="LVS_HEARTBEAT_KEY_FILE",
              help="shared heartbeat secret (or env LVS_HEARTBEAT_KEY)")
@click.option("--vip-guardian/--no-vip-guardian", default=True, show_default=True,
              help="a child process removes our VIPs at once if this agent dies "
              "(without it, only their kernel lifetime does)")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="LVS_STATE_DIR",
              help="this agent's runtime files (conntrackd's config, socket, lock file) "
              "[default: /run/pulse/CLUSTER/NODE]")
@click.option("--conntrackd", default="conntrackd", show_default=True, envvar="LVS_CONNTRACKD",
              help="the conntrackd program (connection state sync with nftables)")
@click.option("--etcd-ca", envvar="LVS_ETCD_CA")
@click.option("--etcd-cert", envvar="LVS_ETCD_CERT")
@click.option("--etcd-key", envvar="LVS_ETCD_KEY")
@click.option("--etcd-user", envvar="LVS_ETCD_USER")
@click.option("--etcd-password", envvar="LVS_ETCD_PASSWORD")
@click.option("-v", "--verbose", count=True)
def cli(etcd_url: str | None, cluster: str, node: str, config_path: Path | None,
        dataplane: str, metrics_address: str | None, metrics_max_servers: int,
        heartbeat_key_file: str | None,
        etcd_ca: str | None, etcd_cert: str | None, etcd_key: str | None,
        vip_guardian: bool, etcd_user: str | None, etcd_password: str | None,
        state_dir: Path | None, conntrackd: str, verbose: int) -> None:
    """pulse: run this router of a Piranha LVS cluster kept in etcd."""
    logging.basicConfig(level=logging.INFO - 10 * min(verbose, 1),
                        format=f"%(asctime)s {node} %(levelname)s %(name)s: %(message)s")
    limit_arenas()  # before any thread: bulk steps run in worker threads
    from .metrics import serve
    from .pulse import AgentOptions, Pulse

    try:
        check_cluster_name(cluster)
        settings = settings_from(etcd_url, ca=etcd_ca, cert=etcd_cert, key=etcd_key,
                                 user=etcd_user, password=etcd_password, timeout=2.0)
        opts = AgentOptions(settings=settings, cluster=cluster, node=node,
                            bootstrap=config_path, dataplane=dataplane,
                            metrics_address=metrics_address,
                            metrics_max_servers=metrics_max_servers,
                            heartbeat_key_file=heartbeat_key_file,
                            vip_guardian=vip_guardian, state_dir=state_dir,
                            conntrackd=conntrackd)
        pulse = Pulse(opts)
        if metrics_address:
            serve(pulse, metrics_address)
        sys.exit(asyncio.run(pulse.run()))
    except (SettingsError, ConfigError, HeartbeatConfigError, BindError, BackendUnavailable,
            EtcdAuthError, ValueError, OSError) as exc:
        click.echo(f"pulse: {exc}", err=True)
        sys.exit(1)


def main() -> None:
    """Console entry point."""
    cli(prog_name="pulse")
