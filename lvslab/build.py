"""Build and tear down the lab's namespaces, bridges and links (no processes but killing)."""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from pathlib import Path

from . import netns
from .topology import HOST_RE, PUBLIC, Host, Topology


def port_name(host: str, ifname: str) -> str:
    """Name of a host's veth end inside the bridge namespace (unique per bridge)."""
    return f"{host}-{ifname}"


def build(topo: Topology) -> None:
    """Create both LANs, every host with its interfaces, and the host link if asked."""
    for lan in ("public", "private"):
        netns.add_ns(topo.bridge_ns(lan))
        netns.add_bridge(topo.bridge_ns(lan))
    for host in topo.hosts:
        ns = netns.add_ns(topo.ns(host.name))
        for iface in host.ifaces:
            netns.plug(topo.bridge_ns(iface.lan), port_name(host.name, iface.name), ns,
                       iface.name, addrs=[f"{iface.address}/{topo.prefixlen(iface.lan)}"])
        add_routes(topo, host)
        if host.role == "router":
            netns.sysctl(ns, "net.ipv4.ip_forward", 1)
        if host.role == "server" and topo.network == "direct":
            direct_routing_server(topo, host)
    for host in topo.hosts:
        wait_ready(topo, host)
    if topo.host_link:
        netns.delete_link(None, topo.host_veth)
        netns.plug(topo.bridge_ns(PUBLIC), "host", None, topo.host_veth,
                   addrs=[f"{topo.host_ip}/{topo.prefixlen(PUBLIC)}"])


def direct_routing_server(topo: Topology, host: Host) -> None:
    """A real server for direct routing: the VIP on ``lo``, never claimed on a wire.

    ``arp_ignore = 1``: answer ARP only for addresses of the interface asked (so not for the
    VIP, which is on lo); ``arp_announce = 2``: never use the VIP as the source of its own
    ARP requests. ``rp_filter = 2`` (loose): requests come in on the private LAN while the
    route back to the client is the public one.
    """
    ns = topo.ns(host.name)
    netns.add_addr(ns, "lo", f"{topo.vip}/32")
    for conf in ("all", *(i.name for i in host.ifaces)):
        netns.sysctl(ns, f"net.ipv4.conf.{conf}.arp_ignore", 1)
        netns.sysctl(ns, f"net.ipv4.conf.{conf}.arp_announce", 2)
        netns.sysctl(ns, f"net.ipv4.conf.{conf}.rp_filter", 2)


def add_routes(topo: Topology, host: Host) -> None:
    """The host's default route, if it has one (again after its links were down)."""
    if host.gateway:
        netns.route(topo.ns(host.name), "replace", "default", "via", host.gateway)


def set_links(topo: Topology, host: Host, up: bool) -> None:
    """All of the host's interfaces down (a crash, a pulled cable) or up again."""
    ns = topo.ns(host.name)
    for iface in host.ifaces:
        netns.link(ns, "set", iface.name, "up" if up else "down")
    if up:
        add_routes(topo, host)
        wait_ready(topo, host)


def _ready(topo: Topology, host: Host) -> bool:
    for iface in host.ifaces:
        (inner,) = netns.ip_json(topo.ns(host.name), "link", "show", "dev", iface.name)
        (port,) = netns.ip_json(topo.bridge_ns(iface.lan), "-d", "link", "show", "dev",
                                port_name(host.name, iface.name))
        slave = port.get("linkinfo", {}).get("info_slave_data", {})
        if (inner.get("operstate"), port.get("operstate"), slave.get("state")) != (
                "UP", "UP", "forwarding"):
            return False
    return True


def wait_ready(topo: Topology, host: Host, within: float = 5.0) -> None:
    """Wait until the host's links and their bridge ports forward traffic."""
    deadline = time.monotonic() + within
    while not _ready(topo, host):
        if time.monotonic() > deadline:
            raise netns.LabError(f"links of {host.name} not up after {within} s")
        time.sleep(0.01)


def links_up(topo: Topology, host: Host) -> bool:
    """Whether every interface of the host is administratively up."""
    links = netns.ip_json(topo.ns(host.name), "link", "show")
    state = {link["ifname"]: "UP" in link.get("flags", []) for link in links}
    return all(state.get(i.name, False) for i in host.ifaces)


def lab_namespaces(prefix: str) -> list[str]:
    """Existing namespaces that belong to the lab of ``prefix`` (and nothing else)."""
    pattern = re.compile(rf"^{re.escape(prefix)}-{HOST_RE}$")
    return [ns for ns in netns.namespaces() if pattern.match(ns)]


def teardown(prefix: str, state_dir: Path | None) -> list[str]:
    """Kill every process in the lab's namespaces, delete them, the host link and state dir.

    Needs nothing but the prefix (works after a crash or with a damaged state file);
    idempotent. Returns the namespaces deleted.
    """
    found = lab_namespaces(prefix)
    for ns in found:
        netns.kill_all(ns)
    for ns in found:
        netns.sh("ip", "netns", "del", ns, check=False)
    host_veth = f"{prefix}-host"
    links = netns.ip_json(None, "-d", "link", "show")
    if any(link.get("ifname") == host_veth
           and link.get("linkinfo", {}).get("info_kind") == "veth" for link in links):
        netns.delete_link(None, host_veth)
    if state_dir is not None:
        shutil.rmtree(state_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the shared parent, once no lab uses it
            Path(state_dir).parent.rmdir()
    return found
