"""conntrackd.conf from lvs.cf: a pure function (agent/conntrack/config.py)."""

from __future__ import annotations

from ipaddress import ip_address
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
    s = settings(cfg, node, interface="eth1", state_dir=STATE, **kw)
    assert s is not None
    return s


def test_two_routers_unicast_udp_over_the_private_link() -> None:
    s = make(config(router("r1", 11), router("r2", 12)))
    assert s is not None and s.transport == "udp"
    assert (s.local, s.peers) == (ip_address("10.0.1.11"), (ip_address("10.0.1.12"),))
    text = render(s)
    assert "    Mode FTFW {" in text
    assert "UDP {\n        IPv4_address 10.0.1.11\n        IPv4_Destination_Address 10.0.1.12\n" \
           "        Port 3780\n        Interface eth1\n" in text
    assert f"LockFile {STATE}/conntrackd.lock" in text
    assert f"Path {STATE}/conntrackd.ctl" in text
    assert "DisableExternalCache no" in text and "Multicast" not in text


def test_three_routers_multicast_on_the_link_of_our_address() -> None:
    s = make(config(router("r1", 11), router("r2", 12), router("r3", 13), syncd_id=4), "r2")
    assert s is not None and s.transport == "multicast"
    assert s.peers == (ip_address("10.0.1.11"), ip_address("10.0.1.13"))
    text = render(s)
    assert "Multicast {\n        IPv4_address 225.0.0.50\n        Group 3784\n" \
           "        IPv4_interface 10.0.1.12\n        Interface eth1\n" in text
    assert "UDP {" not in text


def test_public_addresses_unless_every_router_has_a_private_one() -> None:
    s = make(config(router("r1", 11), router("r2", 12, private=False)))
    assert s is not None
    assert (s.local, s.peers) == (ip_address("10.0.0.11"), (ip_address("10.0.0.12"),))


def test_inactive_routers_are_no_peers() -> None:
    cfg = config(router("r1", 11), router("r2", 12), router("r3", 13, active=False))
    s = make(cfg)
    assert s is not None and s.transport == "udp" and s.peers == (ip_address("10.0.1.12"),)


def test_primary_backup_globals() -> None:
    cfg = LvsConfig(syncdaemon=True, primary="10.0.0.1", primary_private="10.0.1.1",
                    backup="10.0.0.2", backup_private="10.0.1.2", virtuals=(WEB,))
    s = make(cfg, "backup")
    assert s is not None and (s.local, s.peers) == (ip_address("10.0.1.2"),
                                                    (ip_address("10.0.1.1"),))


@pytest.mark.parametrize("cfg", [
    config(router("r1", 11), router("r2", 12), syncdaemon=False),  # sync off
    config(router("r1", 11)),  # nobody to sync with
    config(router("r1", 11), router("r2", 12), virtuals=()),  # nothing to sync
    config(router("r1", 11), router("r2", 12), service="fos", virtuals=()),
])
def test_nothing_to_sync(cfg: LvsConfig) -> None:
    assert settings(cfg, "r1", interface="eth1", state_dir=STATE) is None


def test_unknown_node_is_an_error() -> None:
    with pytest.raises(SyncConfigError, match="'r9' is not a router"):
        local_address(config(router("r1", 11), router("r2", 12)), "r9")


def test_filter_only_this_configs_addresses_and_protocols() -> None:
    cfg = config(router("r1", 11), router("r2", 12), virtuals=(WEB, DNS))
    assert [str(a) for a in filter_addresses(cfg)] == [
        "10.0.0.100", "10.0.0.101", "10.0.1.21", "10.0.1.22", "10.0.2.9"]
    assert filter_protocols(cfg) == ("tcp", "udp")
    text = render(make(cfg))
    assert ("        Protocol Accept {\n            TCP\n            UDP\n        }\n"
            "        Address Accept {\n            IPv4_address 10.0.0.100\n") in text
    assert "IPv4_address 10.0.1.11\n" not in text.split("Filter")[1]  # not our own links


def test_fwmark_services_sync_every_protocol_a_mark_may_carry() -> None:
    mark = WEB | {"name": "marked", "fwmark": 7}
    assert filter_protocols(config(router("r1", 11), router("r2", 12),
                                   virtuals=(mark,))) == ("tcp", "udp", "sctp")


def test_ipv6_pair_and_the_refused_ipv6_multicast() -> None:
    v6 = [{"name": f"r{i}", "address": f"fd00::{i}", "private": f"fd01::{i}"}
          for i in (1, 2, 3)]
    s = make(config(*v6[:2]))
    assert s is not None
    assert "IPv6_address fd01::1\n        IPv6_Destination_Address fd01::2\n" in render(s)
    with pytest.raises(SyncConfigError, match=r"multicast.*IPv4 only"):
        make(config(*v6))
    with pytest.raises(SyncConfigError, match="mix IPv4 and IPv6"):
        make(config(router("r1", 11), v6[1]))


def test_direct_injection_and_hash_limit() -> None:
    s = make(config(router("r1", 11), router("r2", 12)), external_cache=False,
             hash_limit=1000)
    text = render(s)
    assert "DisableExternalCache yes" in text and "HashLimit 1000" in text


def test_wanted() -> None:
    assert wanted(config(router("r1", 11)))
    assert not wanted(config(router("r1", 11), syncdaemon=False))
