"""conntrackd.conf from lvs.cf: a pure function (agent/conntrack/config.py)."""

from __future__ import annotations

import re
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from agent.conntrack.config import (
    SyncConfigError,
    SyncSettings,
    filter_addresses,
    filter_protocols,
    local_address,
    render,
    settings,
    wanted,
)
from cluster.model import LvsConfig

STATE = Path("/run/pulse/c/r1/conntrackd")


def router(name: str, n: int, private: bool = True, **fields: Any) -> dict[str, Any]:
    out = {"name": name, "address": f"10.0.0.{n}"} | fields
    return out | ({"private": f"10.0.1.{n}"} if private else {})


WEB = {"name": "web", "address": "10.0.0.100 eth0:1", "port": 80, "sorry_server": "10.0.2.9",
       "servers": [{"name": "a", "address": "10.0.1.21"}, {"name": "b", "address": "10.0.1.22"}]}
DNS = {"name": "dns", "address": "10.0.0.101 eth0:1", "protocol": "udp", "port": 53,
       "servers": [{"name": "a", "address": "10.0.1.21"}]}


def config(*routers: dict[str, Any], virtuals: tuple[dict[str, Any], ...] = (WEB,),
           **globals_: Any) -> LvsConfig:
    return LvsConfig(syncdaemon=globals_.pop("syncdaemon", True), routers=routers,
                     virtuals=virtuals, **globals_)


def make(cfg: LvsConfig, node: str = "r1", **kw: Any) -> SyncSettings:
    """The settings of the only peer (two routers)."""
    (s,) = settings(cfg, node, interface="eth1", state_dir=STATE, **kw)
    return s


def test_two_routers_unicast_udp_over_the_private_link() -> None:
    s = make(config(router("r1", 11), router("r2", 12)))
    assert (s.local, s.peer, s.peer_name) == (ip_address("10.0.1.11"),
                                              ip_address("10.0.1.12"), "r2")
    text = render(s)
    assert "    Mode FTFW {" in text
    assert "UDP {\n        IPv4_address 10.0.1.11\n        IPv4_Destination_Address 10.0.1.12\n" \
           "        Port 3780\n        Interface eth1\n" in text
    assert f"LockFile {STATE}/r2/conntrackd.lock" in text
    assert f"Path {STATE}/r2/conntrackd.ctl" in text
    assert "DisableExternalCache no" in text and "Multicast" not in text


def test_three_routers_one_conntrackd_per_peer_each_pair_its_own_port() -> None:
    cfg = config(router("r1", 11), router("r2", 12), router("r3", 13), syncd_id=4)
    mesh = {node: settings(cfg, node, interface="eth1", state_dir=STATE)
            for node in ("r1", "r2", "r3")}
    assert [(s.peer_name, str(s.peer), s.port) for s in mesh["r2"]] == [
        ("r1", "10.0.1.11", 3784), ("r3", "10.0.1.13", 3784 + 512)]
    assert [(s.peer_name, s.port) for s in mesh["r1"]] == [("r2", 3784), ("r3", 3784 + 256)]
    assert [(s.peer_name, s.port) for s in mesh["r3"]] == [("r1", 3784 + 256),
                                                          ("r2", 3784 + 512)]
    assert {s.state_dir for s in mesh["r2"]} == {STATE / "r1", STATE / "r3"}
    assert all("Multicast" not in render(s) for s in mesh["r2"])


def test_too_many_routers_for_the_ports() -> None:
    many = [router(f"r{i}", i) for i in range(1, 25)]
    with pytest.raises(SyncConfigError, match="more ports than there are"):
        settings(config(*many), "r1", interface="eth1", state_dir=STATE)


def test_public_addresses_unless_every_router_has_a_private_one() -> None:
    s = make(config(router("r1", 11), router("r2", 12, private=False)))
    assert (s.local, s.peer) == (ip_address("10.0.0.11"), ip_address("10.0.0.12"))


def test_inactive_routers_are_no_peers() -> None:
    cfg = config(router("r1", 11), router("r2", 12), router("r3", 13, active=False))
    assert make(cfg).peer == ip_address("10.0.1.12")
    assert settings(cfg, "r3", interface="eth1", state_dir=STATE) == ()  # not in use


def test_primary_backup_globals() -> None:
    cfg = LvsConfig(syncdaemon=True, primary="10.0.0.1", primary_private="10.0.1.1",
                    backup="10.0.0.2", backup_private="10.0.1.2", backup_active=True,
                    virtuals=(WEB,))
    s = make(cfg, "backup")
    assert (s.local, s.peer) == (ip_address("10.0.1.2"), ip_address("10.0.1.1"))


@pytest.mark.parametrize("cfg", [
    config(router("r1", 11), router("r2", 12), syncdaemon=False),  # sync off
    config(router("r1", 11)),  # nobody to sync with
    config(router("r1", 11), router("r2", 12), virtuals=()),  # nothing to sync
    config(router("r1", 11), router("r2", 12), service="fos", virtuals=()),
])
def test_nothing_to_sync(cfg: LvsConfig) -> None:
    assert settings(cfg, "r1", interface="eth1", state_dir=STATE) == ()


def test_unknown_node_is_an_error() -> None:
    with pytest.raises(SyncConfigError, match="'r9' is not a router"):
        local_address(config(router("r1", 11), router("r2", 12)), "r9")


def covered(cfg: LvsConfig) -> set[str]:
    """Every address the filter accepts, of the 10.0.0-2.x networks the tests use."""
    nets = filter_addresses(cfg)
    return {str(ip_network("10.0.0.0/22")[i]) for i in range(1024)
            if any(ip_network("10.0.0.0/22")[i] in n for n in nets)}


def test_filter_accepts_the_networks_of_this_configs_addresses_less_the_routers() -> None:
    cfg = config(router("r1", 11), router("r2", 12), virtuals=(WEB, DNS))
    got = covered(cfg)
    # VIPs 10.0.0.100-101, servers 10.0.1.21-22, sorry server 10.0.2.9: their /24s ...
    assert {"10.0.0.100", "10.0.0.101", "10.0.1.21", "10.0.1.22", "10.0.2.9"} <= got
    assert {"10.0.0.200", "10.0.1.99", "10.0.2.0", "10.0.2.255"} <= got
    assert "10.0.3.1" not in got  # ... and nothing else
    # ... less the routers' own addresses (heartbeats, etcd, conntrackd itself)
    mine = {"10.0.0.11", "10.0.0.12", "10.0.1.11", "10.0.1.12"}
    assert not mine & got and len(got) == 3 * 256 - len(mine)
    assert filter_protocols(cfg) == ("tcp", "udp")
    text = render(make(cfg))
    assert ("        Protocol Accept {\n            TCP\n            UDP\n        }\n"
            "        Address Accept {\n            IPv4_address 10.0.0.0/29\n") in text
    assert "IPv4_address 10.0.2.0/24\n" in text
    assert "10.0.1.11\n" not in text.split("Filter")[1] and "10.0.0.12/" not in text


def test_a_new_server_in_a_covered_network_leaves_conntrackd_as_it_runs() -> None:
    """conntrackd reads its filter at start only: a push that adds a real server must not
    restart every router's conntrackd (the soak saw it restart at each such push)."""
    before = render(make(config(router("r1", 11), router("r2", 12))))
    more = WEB | {"servers": [*WEB["servers"], {"name": "c", "address": "10.0.1.23"}]}
    assert render(make(config(router("r1", 11), router("r2", 12), virtuals=(more,)))) == before
    away = WEB | {"servers": [*WEB["servers"], {"name": "c", "address": "10.0.7.23"}]}
    after = render(make(config(router("r1", 11), router("r2", 12), virtuals=(away,))))
    assert after != before and "IPv4_address 10.0.7.0/24\n" in after


def test_ipv6_filter_networks_are_64s() -> None:
    v6 = {"name": "web6", "address": "2001:db8::80 eth0", "port": 80,
          "servers": [{"name": "a", "address": "2001:db8:1::21"}]}
    nets = filter_addresses(config(router("r1", 11), router("r2", 12), virtuals=(v6,)))
    assert [str(n) for n in nets] == ["2001:db8::/64", "2001:db8:1::/64"]


def test_fwmark_services_sync_every_protocol_a_mark_may_carry() -> None:
    mark = WEB | {"name": "marked", "fwmark": 7}
    assert filter_protocols(config(router("r1", 11), router("r2", 12),
                                   virtuals=(mark,))) == ("tcp", "udp", "sctp")


def test_ipv6_sync_links() -> None:
    v6 = [{"name": f"r{i}", "address": f"fd00::{i}", "private": f"fd01::{i}"}
          for i in (1, 2, 3)]
    s = make(config(*v6[:2]))
    assert "IPv6_address fd01::1\n        IPv6_Destination_Address fd01::2\n" in render(s)
    assert len(settings(config(*v6), "r1", interface="eth1", state_dir=STATE)) == 2
    with pytest.raises(SyncConfigError, match="mix IPv4 and IPv6"):
        make(config(router("r1", 11), v6[1]))


def test_direct_injection_and_hash_limit() -> None:
    s = make(config(router("r1", 11), router("r2", 12)), external_cache=False,
             hash_limit=1000)
    text = render(s)
    assert "DisableExternalCache yes" in text and "HashLimit 1000" in text


def test_netlink_buffer_holds_a_burst_and_an_overrun_resyncs_in_seconds() -> None:
    """A 100,000-connection burst overran conntrackd's example 2 MiB and waited 30 s."""
    text = render(make(config(router("r1", 11), router("r2", 12))))
    size = int(re.search(r"NetlinkBufferSize (\d+)", text).group(1))
    grow = int(re.search(r"NetlinkBufferSizeMaxGrowth (\d+)", text).group(1))
    resync = re.search(r"NetlinkOverrunResync (\S+)", text).group(1)
    assert size >= 32 * 2**20 and grow >= 4 * size
    assert resync.isdigit() and 0 < int(resync) <= 5  # "on" would be 30 s


def test_wanted() -> None:
    assert wanted(config(router("r1", 11)))
    assert not wanted(config(router("r1", 11), syncdaemon=False))
