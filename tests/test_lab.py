"""The local lab (lvslab): pure parts, a real lab in namespaces, faults, the CLI.

Routers run a stand-in agent (the real ``pulse`` is tested elsewhere). Every lab gets a
prefix ``lt<pid><letter>`` and its own subnets; labs of dead runs are removed first.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from cluster import lvscf
from lvslab import Lab, LabError, Topology, etcd_cluster, faults, netns, services
from lvslab import state as lab_state
from lvslab.cli import etcd_line
from lvslab.cli import lab as lab_cli
from lvslab.config_file import lab_lvs_cf, priorities, validate
from lvslab.echo import echo_reply
from lvslab.etcd_server import free_port
from lvslab.httpd import response, wants_keep_alive
from lvslab.topology import HOST_RE

LVSLAB = str(Path(sys.executable).parent / "lvslab")
NET = 100 + os.getpid() % 100  # second octet: distinct per run
AGENT = ["sh", "-c", "echo agent {node} {etcd} {cluster} {metrics} {keyfile} {config}; "
         "exec sleep 3600"]
netns_mark = pytest.mark.netns


def prefix(letter: str) -> str:
    return f"lt{os.getpid()}{letter}"


def subnet(n: int) -> str:
    return f"10.{NET}.{n}.0/24"


@pytest.fixture(scope="module", autouse=True)
def no_dead_labs() -> None:
    """Remove labs of earlier runs of this file whose process is gone."""
    if os.geteuid() != 0:
        return
    for ns in netns.namespaces():
        m = re.match(r"^lt(\d+)([a-z])-", ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            Lab(f"lt{m.group(1)}{m.group(2)}").down()


# ---------------------------------------------------------------- pure parts


def test_topology_addresses_and_names():
    topo = Topology("lab", "10.77.0.0/24", routers=3, servers=2)
    assert topo.private == "10.77.1.0/24"
    assert [h.name for h in topo.hosts] == ["etcd", "r1", "r2", "r3", "rs1", "rs2", "client"]
    r2 = topo.host("r2")
    assert [(i.name, i.address) for i in r2.ifaces] == [("eth0", "10.77.0.12"),
                                                        ("eth1", "10.77.1.12")]
    assert topo.host("rs2").address() == "10.77.1.22"
    assert topo.host("rs2").gateway == topo.gateway == "10.77.1.254"
    assert (topo.etcd_url, topo.vip, topo.ns("client")) == (
        "http://10.77.0.2:2379", "10.77.0.100", "lab-client")
    assert Topology.from_json(json.loads(json.dumps(topo.to_json()))) == topo
    with pytest.raises(LabError, match="no host 'r4'"):
        topo.host("r4")


def test_etcd_cluster_topology():
    one = Topology("lab", "10.77.0.0/24")
    assert one.etcd_members == 1 and one.etcd_names == ["etcd"]
    assert one.etcd_urls == ["http://10.77.0.2:2379"]
    assert one.etcd_endpoints == one.etcd_url == "http://10.77.0.2:2379"
    assert Topology.from_json({"prefix": "lab"}).etcd_members == 1  # an older state file
    three = Topology("lab", "10.77.0.0/24", routers=2, servers=1, etcd_members=3)
    assert [h.name for h in three.hosts] == ["etcd1", "etcd2", "etcd3", "r1", "r2", "rs1",
                                              "client"]
    assert [(h.role, h.address()) for h in three.hosts[:3]] == [
        ("etcd", "10.77.0.2"), ("etcd", "10.77.0.3"), ("etcd", "10.77.0.4")]
    assert three.ns("etcd2") == "lab-etcd2"
    assert three.etcd_endpoints == ("http://10.77.0.2:2379,http://10.77.0.3:2379,"
                                    "http://10.77.0.4:2379")
    assert three.etcd_initial_cluster == ("etcd1=http://10.77.0.2:2380,"
                                          "etcd2=http://10.77.0.3:2380,"
                                          "etcd3=http://10.77.0.4:2380")
    assert Topology.from_json(json.loads(json.dumps(three.to_json()))) == three
    five = Topology("lab", routers=9, etcd_members=5)
    addrs = [h.address("public") for h in five.hosts if h.role in ("etcd", "router")]
    assert addrs[4] == "10.77.0.6" and addrs[5] == "10.77.0.11"  # no clash with routers
    assert len(set(addrs)) == len(addrs)
    with pytest.raises(LabError, match="'etcd' is not an etcd member"):
        three.etcd_member_ip("etcd")
    cmd = services.agent_command(["pulse", "--etcd", "{etcd}"], three, "r1", "c", "k")
    assert cmd[-1] == three.etcd_endpoints  # the agents get every member
    assert all(re.fullmatch(HOST_RE, h.name) for t in (one, five) for h in t.hosts)


def test_lab_etcd_member_commands(tmp_path):
    """A member of a cluster names every peer and the lab's token; a lone member is the
    single-node etcd it always was (its old data dir and name still fit)."""
    three = Topology("lab", "10.77.0.0/24", etcd_members=3)
    etcd2 = services.LabEtcd(three, "etcd2", tmp_path / "e2", tmp_path / "e2.log", "tok")
    cmd = etcd2.command()
    arg = lambda flag: cmd[cmd.index(flag) + 1]  # noqa: E731
    assert cmd[:4] == ["ip", "netns", "exec", "lab-etcd2"]
    assert (arg("--name"), arg("--initial-cluster"), arg("--initial-cluster-token")) == (
        "etcd2", three.etcd_initial_cluster, "tok")
    assert (arg("--listen-client-urls"), arg("--listen-peer-urls")) == (
        "http://10.77.0.3:2379", "http://10.77.0.3:2380")
    lone = services.LabEtcd(Topology("lab"), "etcd", tmp_path / "e", tmp_path / "e.log").command()
    assert lone[lone.index("--name") + 1] == "lab"
    assert lone[lone.index("--initial-cluster") + 1] == "lab=http://10.77.0.2:2380"
    assert "--initial-cluster-token" not in lone


STATUS = [  # etcdctl endpoint status -w json, etcd2 (the old leader) not answering
    {"Endpoint": "http://10.77.0.2:2379", "Status": {
        "header": {"cluster_id": 7, "member_id": 11, "revision": 5, "raft_term": 3},
        "leader": 33, "raftIndex": 20, "raftTerm": 3}},
    {"Endpoint": "http://10.77.0.4:2379", "Status": {
        "header": {"cluster_id": 7, "member_id": 33, "revision": 5, "raft_term": 3},
        "leader": 33, "raftIndex": 20, "raftTerm": 3}},
    {"Endpoint": "http://10.9.9.9:2379", "Status": {"header": {"member_id": 99}}},
]


def test_etcd_leader_from_endpoint_status():
    three = Topology("lab", "10.77.0.0/24", etcd_members=3)
    seen = etcd_cluster.parse_status(json.dumps(STATUS), three)
    assert list(seen) == ["etcd1", "etcd3"]  # not a member of ours: ignored
    assert seen["etcd3"] == etcd_cluster.MemberStatus("etcd3", 33, 33, 3, 20, 7)
    assert etcd_cluster.leader_of(seen, 3) == "etcd3"
    assert etcd_cluster.leader_of(seen, 5) is None  # 2 of 5 follow it: no majority
    assert etcd_cluster.leader_of({"etcd1": seen["etcd1"]}, 3) is None  # leader silent
    electing = {n: replace(s, leader_id=0) for n, s in seen.items()}
    assert etcd_cluster.leader_of(electing, 3) is None
    assert etcd_cluster.parse_status("", three) == {}
    with pytest.raises(LabError, match="not JSON"):
        etcd_cluster.parse_status("Error: x", three)
    assert "leader etcd3, 2 of 3 members answer (etcd1, etcd3)" in etcd_line(seen, 3)
    assert "no leader" in etcd_line({}, 3)


def test_etcd_fault_scripts():
    three = Topology("lab", "10.77.0.0/24", etcd_members=3)
    cut = faults.add_script(faults.etcd_chains(three.etcd_ips))
    assert "ip saddr { 10.77.0.2, 10.77.0.3, 10.77.0.4 } drop" in cut
    assert "ip daddr { 10.77.0.2, 10.77.0.3, 10.77.0.4 } drop" in cut
    peers = faults.peer_chains(["10.77.0.2", "10.77.0.4"])
    assert peers == {"peers_in": ("input", ["ip saddr { 10.77.0.2, 10.77.0.4 } drop"]),
                     "peers_out": ("output", ["ip daddr { 10.77.0.2, 10.77.0.4 } drop"])}
    with pytest.raises(LabError, match="r1 is not an etcd member"):
        faults.cut_etcd_peers(three, "r1")
    with pytest.raises(LabError, match="only etcd member"):
        faults.cut_etcd_peers(Topology("lab"), "etcd")


def test_direct_routing_topology_puts_real_servers_on_the_public_lan():
    topo = Topology("lab", "10.77.0.0/24", routers=2, servers=2, network="direct")
    rs2 = topo.host("rs2")
    assert [(i.name, i.lan, i.address) for i in rs2.ifaces] == [
        ("eth0", "private", "10.77.1.22"), ("eth1", "public", "10.77.0.22")]
    assert rs2.gateway is None  # replies go straight to the client, not through a router
    assert rs2.address() == "10.77.1.22"  # what lvs.cf names and health checks reach
    assert Topology.from_json(json.loads(json.dumps(topo.to_json()))) == topo
    assert Topology.from_json({"prefix": "lab"}).network == "nat"  # an older state file
    cfg = validate(lab_lvs_cf(topo), "lab.cf")
    assert cfg.network == "direct" and cfg.nat_router is None
    def bind(topo: Topology) -> str:
        cmd = services.httpd_command(topo, "rs1")
        return cmd[cmd.index("--bind") + 1]

    assert bind(topo) == "0.0.0.0"  # answers for the VIP too
    assert bind(Topology("lab")) == "10.77.1.21"
    with pytest.raises(LabError, match="needs the IPVS data plane"):
        Lab("lab", network="direct")  # nftables, the default


@pytest.mark.parametrize("kwargs, message", [
    ({"network": "tunnel"}, "lab network must be nat or direct"),
    ({"prefix": "Lab"}, "bad lab prefix"),
    ({"prefix": "a-b"}, "bad lab prefix"),
    ({"prefix": "abcdefghijk"}, "bad lab prefix"),
    ({"public": "10.77.0.0/25"}, "/24 or larger"),
    ({"public": "10.77.0.1/24"}, "host bits"),
    ({"public": "fd00::/64"}, "IPv4"),
    ({"private": "10.77.0.0/24"}, "overlap"),
    ({"routers": 0}, "routers must be"),
    ({"servers": 30}, "real servers must be"),
    ({"etcd_members": 2}, "etcd members must be 1, 3 or 5"),
    ({"etcd_members": 0}, "etcd members must be 1, 3 or 5"),
    ({"etcd_members": 7}, "etcd members must be 1, 3 or 5"),
])
def test_bad_topology_is_a_clear_error(kwargs, message):
    with pytest.raises(LabError, match=message):
        Topology(**kwargs)


def test_generated_lvs_cf_is_valid_and_complete():
    topo = Topology("lab", "10.50.0.0/24", "10.60.0.0/24", routers=3, servers=2)
    cfg = validate(lab_lvs_cf(topo), "lab.cf")
    routers = cfg.effective_routers()
    assert [(r.name, str(r.address), str(r.private), r.priority) for r in routers] == [
        ("r1", "10.50.0.11", "10.60.0.11", 300), ("r2", "10.50.0.12", "10.60.0.12", 200),
        ("r3", "10.50.0.13", "10.60.0.13", 100)]
    assert (cfg.keepalive, cfg.deadtime, cfg.network) == (0.5, 2.0, "nat")
    assert (str(cfg.nat_router.ip), cfg.nat_router.device) == ("10.60.0.254", "eth1:1")
    http, echo = cfg.virtuals
    for virtual, port in ((http, 80), (echo, 7)):
        assert (str(virtual.address.ip), virtual.address.device, virtual.port) == (
            "10.50.0.100", "eth0:1", port)
        assert [(s.name, str(s.address)) for s in virtual.servers] == [
            ("rs1", "10.60.0.21"), ("rs2", "10.60.0.22")]
    assert (http.name, http.expect, echo.name, echo.send, echo.expect) == (
        "http", "HTTP", "echo", "ping\n", "ping")
    assert priorities(5) == [300, 200, 100, 90, 80]
    with pytest.raises(LabError, match=r"bad\.cf:1"):
        validate("serial_no = x\n", "bad.cf")


def test_agent_command_placeholders():
    topo = Topology("lab", "10.77.0.0/24")
    cmd = services.agent_command(["a", "{node}@{etcd}", "{metrics}", "{cluster}", "{config}",
                                  "{keyfile}", "{statedir}", "{other}"], topo, "r2",
                                 "/s/lvs.cf", "/s/k", "/s/run/r2")
    assert cmd == ["a", "r2@http://10.77.0.2:2379", "10.77.0.12:9100", "default", "/s/lvs.cf",
                   "/s/k", "/s/run/r2", "{other}"]
    default = services.default_agent_cmd()
    assert default[0] == str(Path(sys.executable).parent / "pulse")
    assert "--heartbeat-key-file" in default and "nftables" in default
    assert default[default.index("--state-dir") + 1] == "{statedir}"
    ipvs = services.default_agent_cmd("ipvs")
    assert ipvs[ipvs.index("--dataplane") + 1] == "ipvs"
    with pytest.raises(LabError, match="data plane must be"):
        services.default_agent_cmd("xdp")


def test_fault_scripts():
    script = faults.add_script(faults.hb_chains("r2", ["10.1.0.12", "10.1.1.12"], 539))
    assert "add table inet labfault" in script
    assert "hook input" in script and "hook output" in script
    assert "ip saddr { 10.1.0.12, 10.1.1.12 } udp dport 539 drop" in script
    assert "ip daddr { 10.1.0.12, 10.1.1.12 } udp sport 539 drop" in script
    one_way = faults.hb_chains("r2", ["10.1.0.12"], 539, outbound=False)
    assert list(one_way) == ["hb_from_r2"]
    assert faults.delete_script(["etcd_in"]).splitlines() == [
        "flush chain inet labfault etcd_in", "delete chain inet labfault etcd_in"]


def test_state_round_trip_and_damage(tmp_path):
    state = lab_state.LabState(Topology("x"), str(tmp_path), "/c", ("sleep", "1"), "now",
                               {"r1": 5})
    lab_state.save(state)
    assert lab_state.load(tmp_path) == state
    (tmp_path / "state.json").write_text("{junk")
    with pytest.raises(LabError, match="cannot read"):
        lab_state.load(tmp_path)
    (tmp_path / "state.json").write_text('{"topology": {}}')
    with pytest.raises(LabError, match="damaged"):
        lab_state.load(tmp_path)
    with pytest.raises(LabError, match="is the lab up"):
        lab_state.load(tmp_path / "none")


def test_httpd_replies():
    reply = response("rs1", "GET", "HTTP/1.1", True, "1.2.3.4:5").decode()
    assert reply.startswith("HTTP/1.1 200 OK\r\n") and reply.endswith("\r\n\r\nrs1\n")
    assert "X-Client: 1.2.3.4:5" in reply and "Content-Length: 4" in reply
    assert response("rs1", "POST", "HTTP/1.0", False, "").startswith(b"HTTP/1.0 405")
    assert wants_keep_alive("HTTP/1.1", []) and not wants_keep_alive("HTTP/1.0", [])
    assert not wants_keep_alive("HTTP/1.1", ["Connection: close"])
    assert wants_keep_alive("HTTP/1.0", ["connection: Keep-Alive"])


def test_echo_replies():
    assert echo_reply(b"ping\n", "rs1") == b"ping\n"
    assert echo_reply(b"no newline", "rs1") == b"no newline"
    assert echo_reply(b"?\n", "rs2") == b"rs2\n" and echo_reply(b"?\r\n", "rs2") == b"rs2\n"
    assert echo_reply(b"??\n", "rs2") == b"??\n"


async def test_httpd_serves_the_line_echo_too():
    port, echo_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lvslab.httpd", "--name", "rs7", "--port", str(port),
        "--bind", "127.0.0.1", "--echo-port", str(echo_port), stdout=asyncio.subprocess.PIPE)
    try:
        assert b"echo on port" in await asyncio.wait_for(proc.stdout.readline(), 10)
        conns = [await asyncio.open_connection("127.0.0.1", echo_port) for _ in range(50)]
        for round_ in range(3):
            for i, (_, writer) in enumerate(conns):
                writer.write(f"line {i} {round_}\n".encode())
            for i, (reader, _) in enumerate(conns):
                assert await asyncio.wait_for(reader.readline(), 5) == \
                    f"line {i} {round_}\n".encode()
        reader, writer = conns[0]
        writer.write(b"?\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"rs7\n"
        for _, writer in conns:
            writer.close()
    finally:
        proc.terminate()
        await proc.wait()


async def test_httpd_serves_a_thousand_concurrent_connections():
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lvslab.httpd", "--name", "rs9", "--port", str(port),
        "--bind", "127.0.0.1", stdout=asyncio.subprocess.PIPE)
    try:
        assert b"listening" in await asyncio.wait_for(proc.stdout.readline(), 10)

        async def get() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(0.2)  # hold every connection open at the same time
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            data = await reader.read()
            writer.close()
            return data

        replies = await asyncio.wait_for(asyncio.gather(*(get() for _ in range(1000))), 60)
        assert all(r.startswith(b"HTTP/1.0 200 OK") and r.endswith(b"\r\n\r\nrs9\n")
                   for r in replies)
        # keep-alive: two requests on one connection
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n"
                     b"Connection: close\r\n\r\n")
        assert (await reader.read()).count(b"rs9\n") == 2
        writer.close()
    finally:
        proc.terminate()
        await proc.wait()


# ---------------------------------------------------------------- a real lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    with Lab(prefix("a"), subnet(0), subnet(1), routers=3, servers=2, agent_cmd=AGENT) as lab:
        yield lab
    assert not [ns for ns in netns.namespaces() if ns.startswith(prefix("a") + "-")]


def ok(lab: Lab, host: str, *cmd: str) -> bool:
    return lab.exec(host, *cmd, timeout=20).returncode == 0


def pings(lab: Lab, host: str, ip: str) -> bool:
    return ok(lab, host, "ping", "-c1", "-W1", ip)


def pings_soon(lab: Lab, host: str, ip: str, within: float = 5.0) -> bool:
    """A link just brought up: the neighbour entry the failed pings left may take a moment."""
    deadline = time.monotonic() + within
    while not pings(lab, host, ip):
        if time.monotonic() >= deadline:
            return False
    return True


def tcp_connects(lab: Lab, host: str, ip: str, port: int) -> bool:
    code = f"import socket; socket.create_connection(({ip!r}, {port}), timeout=1).close()"
    return ok(lab, host, sys.executable, "-c", code)


def http_get(lab: Lab, host: str, ip: str) -> str:
    code = f"import urllib.request as u; print(u.urlopen('http://{ip}/', timeout=5).read()" \
           ".decode(), end='')"
    return lab.exec(host, sys.executable, "-c", code, check=True).stdout


RECV = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[2]))
expected = set(sys.argv[3:])
print("ready", flush=True)
got = set()
try:
    while got != expected:
        data, peer = s.recvfrom(100)
        got.add(peer[0])
except TimeoutError:
    pass
print(" ".join(sorted(got)))
"""
SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for ip in sys.argv[2:]:
    for _ in range(3):
        try:
            s.sendto(b"hb", (ip, int(sys.argv[1])))
        except PermissionError:  # dropped by an output rule
            pass
"""


def udp_heard(lab: Lab, sender: str, receiver: str, port: int = 539) -> set[str]:
    """Send heartbeat-port datagrams from ``sender`` to both of ``receiver``'s addresses;
    the source addresses ``receiver`` got them from."""
    rx = lab.popen(receiver, sys.executable, "-c", RECV, str(port), "0.5",
                   *lab.addresses(sender).values(), stdout=subprocess.PIPE, text=True)
    assert rx.stdout.readline().strip() == "ready"
    lab.exec(sender, sys.executable, "-c", SEND, str(port),
             *lab.addresses(receiver).values(), check=True)
    out, _ = rx.communicate(timeout=10)
    return set(out.split())


@netns_mark
def test_hosts_and_links(lab):
    ours = {ns for ns in netns.namespaces() if ns.startswith(lab.prefix + "-")}
    assert ours == {lab.ns(h) for h in lab.hosts} | {f"{lab.prefix}-public",
                                                       f"{lab.prefix}-private"}
    for router in lab.routers:
        assert pings(lab, "client", lab.address(router, "public"))
        assert lab.exec(router, "cat", "/proc/sys/net/ipv4/ip_forward").stdout == "1\n"
        for server in lab.servers:
            assert pings(lab, router, lab.address(server))
    assert pings(lab, "client", lab.address("etcd"))
    assert not pings(lab, "client", lab.address("rs1"))  # private LAN: not on the public one
    route = lab.exec("rs1", "ip", "route", "show", "default").stdout
    assert f"default via {lab.gateway} dev eth0" in route
    assert lab.exec("r1", "ip", "-br", "addr", "show", "eth1").stdout.split()[2] == \
        f"{lab.address('r1', 'private')}/24"


@netns_mark
def test_etcd_config_key_and_state(lab):
    ctl = ["etcdctl", "--endpoints", lab.etcd_url]
    assert "OK" in lab.exec("client", *ctl, "put", "/lab-test", "hello", check=True).stdout
    assert lab.exec("r2", *ctl, "get", "/lab-test", "--print-value-only",
                    check=True).stdout.strip() == "hello"
    shown = services.lvsctl_in(lab.topology, "client", "config", "show")
    assert shown.returncode == 0, shown.stderr
    assert "router r3 {" in shown.stdout and f"address = {lab.vip} eth0:1" in shown.stdout
    assert lvscf.load(lab.config_path).effective_routers()[0].name == "r1"
    key = lab.key_path
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_text().strip()) == 64
    saved = json.loads((lab.state_dir / "state.json").read_text())
    assert saved["etcd_url"] == lab.etcd_url
    assert set(saved["pids"]) == {"etcd", "r1", "r2", "r3", "rs1", "rs2"}
    assert all(lab.alive(h) for h in saved["pids"])
    log = lab.log_path("r2").read_text()
    assert (f"agent r2 {lab.etcd_url} default {lab.address('r2')}:9100 {key} "
            f"{lab.config_path}") in log


@netns_mark
def test_real_servers_answer_their_name(lab):
    assert http_get(lab, "r1", lab.address("rs1")) == "rs1\n"
    assert http_get(lab, "r3", lab.address("rs2")) == "rs2\n"
    code = ("import socket, sys; s = socket.create_connection((sys.argv[1], 7), timeout=5); "
            "s.sendall(b'hi\\n?\\n'); f = s.makefile('rb'); "
            "print(f.readline().decode() + f.readline().decode(), end='')")
    assert lab.exec("r2", sys.executable, "-c", code, lab.address("rs2"),
                    check=True).stdout == "hi\nrs2\n"


@netns_mark
def test_cut_etcd_keeps_router_to_router_traffic(lab):
    etcd = lab.address("etcd")
    lab.cut_etcd("r1")
    try:
        assert faults.active(lab.topology) == {"r1": ["etcd_in", "etcd_out"]}
        assert not tcp_connects(lab, "r1", etcd, 2379)
        assert tcp_connects(lab, "r2", etcd, 2379)
        assert pings(lab, "r1", lab.address("r2", "public"))
        assert pings(lab, "r1", lab.address("r2", "private"))
    finally:
        lab.restore_etcd("r1")
    assert faults.active(lab.topology) == {}
    assert tcp_connects(lab, "r1", etcd, 2379)


@netns_mark
def test_heartbeat_partition_and_one_way_loss(lab):
    r1, r2 = set(lab.addresses("r1").values()), set(lab.addresses("r2").values())
    assert udp_heard(lab, "r1", "r2") == r1  # both links carry datagrams
    lab.partition("r1", ["r2", "r3"])
    try:
        assert udp_heard(lab, "r1", "r2") == set()
        assert udp_heard(lab, "r3", "r1") == set()
        assert udp_heard(lab, "r2", "r3") == r2  # not partitioned from each other
        assert udp_heard(lab, "r1", "r2", port=540) == r1  # only the heartbeat port
        assert tcp_connects(lab, "r1", lab.address("etcd"), 2379)
    finally:
        lab.heal("r1", ["r2", "r3"])
    assert udp_heard(lab, "r1", "r2") == r1
    lab.drop_heartbeats("r1", "r2")
    try:
        assert udp_heard(lab, "r1", "r2") == set()
        assert udp_heard(lab, "r2", "r1") == r2
    finally:
        lab.restore_heartbeats("r1", "r2")
    assert udp_heard(lab, "r1", "r2") == r1
    assert faults.active(lab.topology) == {}


@netns_mark
def test_isolate_and_reconnect(lab):
    lab.isolate("rs2")
    try:
        assert not pings(lab, "r1", lab.address("rs2"))
        assert faults.active(lab.topology) == {"rs2": ["links down"]}
    finally:
        lab.reconnect("rs2")
    assert pings(lab, "r1", lab.address("rs2"))
    assert "default via" in lab.exec("rs2", "ip", "route", "show", "default").stdout


@netns_mark
def test_kill_start_and_down_after_a_crash():
    lab = Lab(prefix("b"), subnet(2), subnet(3), routers=2, servers=1, agent_cmd=["sleep", "3600"])
    lab.up()
    try:
        old = lab.pid("r1")
        lab.kill("r1", link_down=True)
        assert not lab.alive("r1") and not pings(lab, "client", lab.address("r1"))
        assert lab.start("r1") != old and lab.alive("r1")
        assert pings_soon(lab, "client", lab.address("r1"))
        with pytest.raises(LabError, match="already running"):
            lab.start("r1")
        lab.kill("rs1")
        lab.start("rs1")
        assert http_get(lab, "r2", lab.address("rs1")) == "rs1\n"
        # a crash: processes SIGKILLed or orphaned behind our back, state file gone
        lab.exec("r2", "sh", "-c", "setsid sleep 3600 >/dev/null 2>&1 &", check=True)
        pids = [p for h in lab.hosts if lab.ns(h) in netns.namespaces()
                for p in netns.ns_pids(lab.ns(h))]
        assert len(pids) == 5  # etcd, r1, r2, rs1, the orphan
        os.kill(lab.pid("etcd"), signal.SIGKILL)
        (lab.state_dir / "state.json").write_text("{damaged")
        with pytest.raises(LabError, match="lab down"):
            Lab.attach(lab.prefix)
        removed = Lab(lab.prefix).down()  # another process, knowing only the prefix
        assert len(removed) == 7
        assert not [ns for ns in netns.namespaces() if ns.startswith(lab.prefix + "-")]
        assert not lab.state_dir.exists()
        assert all(_gone(p) for p in pids)
        assert Lab(lab.prefix).down() == []  # idempotent
    finally:
        lab.down()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


# ---------------------------------------------------------------- the CLI


def lvslab(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LVS_")}
    return subprocess.run([LVSLAB, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_says_root_is_needed(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for args in (["up", "--prefix", "x"], ["down"], ["kill", "r1"]):
        result = CliRunner().invoke(lab_cli, args)
        assert result.exit_code == 1, result.output
        assert "lvslab: the lab needs root" in result.output
    bad = CliRunner().invoke(lab_cli, ["down", "--prefix", "no-dash"])
    assert bad.exit_code == 1 and "bad lab prefix" in bad.output


@netns_mark
def test_cli_up_status_fault_kill_start_down():
    p, sub = prefix("c"), subnet(4)
    net = sub.rsplit(".", 1)[0]
    try:
        up = lvslab("up", "--prefix", p, "--subnet", sub, "--no-host-link",
                    "--routers", "2", "--servers", "1", "--agent-cmd", "sleep 3600")
        assert up.returncode == 0, up.stderr
        # three etcd members by default; the printout names every endpoint
        endpoints = f"http://{net}.2:2379,http://{net}.3:2379,http://{net}.4:2379"
        assert "3 members of etcd" in up.stdout and f"etcd       {endpoints}\n" in up.stdout
        assert f"ip netns exec {p}-client curl http://{net}.100/" in up.stdout
        assert f"lvslab down --prefix {p}" in up.stdout
        assert not [line for line in netns.ip_json(None, "link") if line["ifname"] == f"{p}-host"]
        first_r1 = json.loads(Path(f"/run/piranha-lab/{p}/state.json").read_text())["pids"]["r1"]

        st = lvslab("status", "--prefix", p)
        assert st.returncode == 0, st.stderr
        assert re.search(r"│ r2 +│ router .*│ pid \d+ +│ up", st.stdout), st.stdout
        assert "config serial_no 1" in st.stdout  # lvsctl status of the lab's etcd
        assert re.search(r"etcd: leader etcd\d, 3 of 3 members answer", st.stdout), st.stdout

        killed = lvslab("kill", "--prefix", p, "etcd-leader")
        leader = killed.stdout.split(":")[0]
        assert killed.returncode == 0 and leader in ("etcd1", "etcd2", "etcd3"), killed
        st = lvslab("status", "--prefix", p)
        assert re.search(rf"│ {leader} +│ etcd .*│ not running", st.stdout), st.stdout
        assert "2 of 3 members answer" in st.stdout, st.stdout  # electing, or a new leader
        assert lvslab("start", "--prefix", p, leader).returncode == 0
        assert lvslab("fault", "cut-etcd-peers", "--prefix", p, leader).returncode == 0
        assert f"{leader}: peers_in, peers_out" in lvslab("fault", "list", "--prefix", p).stdout
        assert lvslab("fault", "restore-etcd-peers", "--prefix", p, leader).returncode == 0
        bad = lvslab("up", "--prefix", p, "--subnet", sub, "--etcd-members", "2")
        assert bad.returncode == 1 and "etcd members must be 1, 3 or 5" in bad.stderr

        assert lvslab("fault", "cut-etcd", "--prefix", p, "r1").returncode == 0
        listed = lvslab("fault", "list", "--prefix", p).stdout
        assert "r1: etcd_in, etcd_out" in listed
        bad = lvslab("fault", "cut-etcd", "--prefix", p, "rs1")
        assert bad.returncode == 1 and "rs1 is not a router" in bad.stderr
        assert "Traceback" not in bad.stderr
        assert lvslab("fault", "clear", "--prefix", p).returncode == 0

        killed = lvslab("kill", "--prefix", p, "r2", "--link-down")
        assert killed.returncode == 0 and "killed pid" in killed.stdout
        st = lvslab("status", "--prefix", p, "--no-etcd").stdout
        assert re.search(r"│ r2 +│ router .*│ not running +│ down", st), st
        assert lvslab("start", "--prefix", p, "r2").returncode == 0
        st = lvslab("status", "--prefix", p, "--no-etcd").stdout
        assert re.search(r"│ r2 +│ router .*│ pid \d+ +│ up", st), st

        again = lvslab("up", "--prefix", p, "--subnet", sub, "--no-host-link",
                       "--routers", "1", "--servers", "1", "--agent-cmd", "sleep 3600")
        assert again.returncode == 0, again.stderr  # the old lab is torn down first
        assert f"{p}-r2" not in netns.namespaces()
        assert f"{p}-r1" in netns.namespaces()
        assert first_r1 not in netns.ns_pids(f"{p}-r1")

        # Nothing serves the VIP here: with --wait, up fails, clearly, after that long.
        t0 = time.monotonic()
        unserved = lvslab("up", "--prefix", p, "--subnet", sub, "--no-host-link",
                          "--routers", "1", "--servers", "1", "--agent-cmd", "sleep 3600",
                          "--wait", "1.5")
        assert unserved.returncode == 1 and "Traceback" not in unserved.stderr
        assert unserved.stderr.startswith(
            f"lvslab: lab {p} was built, but http://{net}.100/ was not served from the client "
            "within 1.5 s (last try: "), unserved.stderr
        assert f"lvslab down --prefix {p}" in unserved.stderr
        assert 1.5 <= time.monotonic() - t0 < 30

    finally:
        down = lvslab("down", "--prefix", p)
    assert down.returncode == 0, down.stderr
    assert not [ns for ns in netns.namespaces() if ns.startswith(p + "-")]
    gone = lvslab("status", "--prefix", p)
    assert gone.returncode == 1 and "is the lab up" in gone.stderr
    assert lvslab("down", "--prefix", p).returncode == 0


@netns_mark
def test_cli_up_returns_once_the_vip_serves():
    """With the real agents, `lvslab up` returns only when a request through the VIP is
    answered: the very next request from the client is served."""
    p, sub = prefix("d"), subnet(6)
    net = sub.rsplit(".", 1)[0]
    try:
        up = lvslab("up", "--prefix", p, "--subnet", sub, "--no-host-link",
                    "--routers", "2", "--servers", "1")
        assert up.returncode == 0, up.stderr
        res = netns.run_in(f"{p}-client", "curl", "-s", "-m", "1", f"http://{net}.100/",
                           check=False)
        assert res.returncode == 0 and res.stdout == "rs1\n", (res, up.stdout)
        assert f"lab {p} is up and serving in" in up.stdout
    finally:
        assert lvslab("down", "--prefix", p).returncode == 0
