"""mh (Maglev) on the nftables data plane, with real namespaces, nft and TCP:

    client 10.232.1.2 --[cbr]-- r1 | r2 --[sbr]-- rs1 .11, rs2 .12, rs3 .13

The routers' "floating" addresses (10.232.1.1 on the client side, 10.232.2.1 the real
servers' default route) and the VIP sit on the active router; the client routes the VIP network via
10.232.1.1. Each router programs its table from the same lvs.cf and hash seed, r2 in
another Python process (another hash randomisation): the two tables must be equal, read
back without drift, and a connection opened through r1 must go on through r2 after r1
dies, with no state sync between them. Each real server answers every line with its name.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator

import pytest
from support import netlab

from agent.dataplane.desired import Health, desired_table
from agent.dataplane.nft import NftBackend
from agent.dataplane.nft.layout import chain_name
from agent.dataplane.table import DestKey, ServiceKey, diff
from cluster import lvscf
from cluster.model import LvsConfig

pytestmark = pytest.mark.netns

RS = {"rs1": "10.232.2.11", "rs2": "10.232.2.12", "rs3": "10.232.2.13"}
VIP = ServiceKey("tcp", "10.232.100.1", 8080)
SEED = 0x5EED
CONNECTIONS = 24

CFG = """serial_no = 1
primary = 10.232.1.1
network = nat
virtual web {{
    address = 10.232.100.1 eth0:1
    port = 8080
    scheduler = mh
    scheduler_flags = mh-port
{extra}    server rs1 {{
        address = 10.232.2.11
    }}
    server rs2 {{
        address = 10.232.2.12
        weight = 2
    }}
}}
"""

SERVER = r"""
import socket, sys, threading
name = sys.argv[1]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8080))
srv.listen(512)
print("ready", flush=True)
def serve(conn):
    with conn, conn.makefile("rwb", buffering=0) as f:
        for _ in f:
            f.write(name.encode() + b"\n")
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

# Opens N connections (mh-port spreads them), prints each one's server, then on a line of
# stdin asks every connection again and prints what each answers (or how it failed).
HOLDER = r"""
import json, socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns, first = [], []
for _ in range(count):
    conn = socket.create_connection((host, port), timeout=5)
    f = conn.makefile("rw")
    f.write("hi\n"); f.flush()
    first.append(f.readline().strip())
    conns.append(f)
print(json.dumps(first), flush=True)
sys.stdin.readline()
again = []
for f in conns:
    try:
        f.write("again\n"); f.flush()
        again.append(f.readline().strip() or "closed")
    except OSError as exc:
        again.append(type(exc).__name__)
print(json.dumps(again), flush=True)
"""

CLIENT = r"""
import collections, json, socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names, refused, failed = collections.Counter(), 0, 0
for _ in range(count):
    try:
        with socket.create_connection((host, port), timeout=3) as conn:
            conn.sendall(b"hi\n")
            names[conn.makefile().readline().strip()] += 1
    except ConnectionRefusedError:
        refused += 1
    except OSError:
        failed += 1
print(json.dumps({"names": names, "refused": refused, "failed": failed}))
"""

# The other router's agent, in a process of its own: parse lvs.cf, compute the desired
# table for every configured server up, program it into the namespace.
PROGRAM = r"""
import asyncio, sys
from agent.dataplane.desired import Health, desired_table
from agent.dataplane.nft import NftBackend
from agent.dataplane.table import diff
from cluster import lvscf
cfg = lvscf.parse(sys.stdin.read(), "lvs.cf").config
up = {(v.name, s.name): Health("up") for v in cfg.virtuals for s in v.servers}
table = desired_table(cfg, up, {}, seed=int(sys.argv[2]))
async def main():
    b = NftBackend(netns=sys.argv[1], compact_delay=None)
    await b.apply(diff(await b.read(), table))
    b.close()
asyncio.run(main())
"""


def config(extra: str = "") -> tuple[str, LvsConfig]:
    text = CFG.format(extra=extra)
    cfg = lvscf.parse(text, "lvs.cf").config
    assert cfg is not None
    return text, cfg


def all_up(cfg: LvsConfig) -> dict:
    return {(v.name, s.name): Health("up") for v in cfg.virtuals for s in v.servers}


def service_chain(lab: netlab.Lab, router: str) -> list[dict]:
    """The mh service's chain as nft lists it, without rule handles."""
    out = lab.run(router, "nft", "-j", "list", "chain", "inet", "piranha", chain_name(VIP))
    items = [item for item in json.loads(out.stdout)["nftables"] if "metainfo" not in item]
    for item in items:
        for body in item.values():
            body.pop("handle", None)
    return items


@pytest.fixture
async def lab() -> AsyncIterator[netlab.Lab]:
    lab = netlab.Lab("mhx")
    try:
        for bridge in ("cbr", "sbr"):
            lab.add_bridge(bridge)
        for name in ("c", "r1", "r2", *RS):
            lab.add_ns(name)
        lab.connect("c", "eth0", bridge="cbr", addrs=["10.232.1.2/24"])
        lab.run("c", "ip", "route", "add", "10.232.100.0/24", "via", "10.232.1.1")
        for router in ("r1", "r2"):
            lab.connect(router, "eth0", bridge="cbr", addrs=[])
            lab.connect(router, "eth1", bridge="sbr", addrs=[])
            lab.sysctl(router, "net.ipv4.ip_forward", 1)
        lab.add_addr("r1", "eth0", "10.232.1.1/24")
        lab.add_addr("r1", "eth1", "10.232.2.1/24")
        lab.add_addr("r1", "lo", f"{VIP.address}/32")  # the active holds the VIP
        for name, addr in RS.items():
            lab.connect(name, "eth0", bridge="sbr", addrs=[f"{addr}/24"])
            lab.run(name, "ip", "route", "add", "default", "via", "10.232.2.1")
            await lab.serve(name, sys.executable, "-c", SERVER, name)
        yield lab
    finally:
        lab.destroy()  # and the servers


async def program(lab: netlab.Lab, router: str, table: dict) -> NftBackend:
    backend = NftBackend(netns=lab.ns(router), compact_delay=None)
    await backend.apply(diff(await backend.read(), table))
    return backend


@pytest.mark.parametrize("seed2", [SEED, SEED + 1], ids=["same-seed", "other-seed"])
async def test_two_routers_build_the_same_table_and_a_connection_moves_between_them(lab, seed2):
    """With another seed on r2 (the control) the tables differ and connections break."""
    text, cfg = config()
    want = desired_table(cfg, all_up(cfg), {}, seed=SEED)
    r1 = await program(lab, "r1", want)
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROGRAM, lab.ns("r2"), str(seed2), stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": "12345"})
    _, err = await asyncio.wait_for(other.communicate(text.encode()), 60)
    assert other.returncode == 0, err.decode()
    r2 = NftBackend(netns=lab.ns("r2"), compact_delay=None)
    try:
        # the same map, element for element, on both routers; read back without drift
        chain = service_chain(lab, "r1")
        assert (chain == service_chain(lab, "r2")) == (seed2 == SEED)
        assert json.dumps(chain).count('"10.232.2.1') >= 32749  # one element per slot
        for backend in (r1, r2):
            assert diff(await backend.read(), want) == [] or seed2 != SEED
            assert backend.problems == ()

        holder = await lab.spawn("c", sys.executable, "-c", HOLDER, VIP.address, "8080",
                                 str(CONNECTIONS), stdin=asyncio.subprocess.PIPE,
                                 stdout=asyncio.subprocess.PIPE)
        first = json.loads(await asyncio.wait_for(holder.stdout.readline(), 30))
        assert set(first) == {"rs1", "rs2"}  # mh-port spreads one client's connections
        # r1 dies; r2 takes the floating addresses; neighbours learn the new MAC
        lab.run("r1", "ip", "link", "set", "eth0", "down")
        lab.run("r1", "ip", "link", "set", "eth1", "down")
        lab.add_addr("r2", "eth0", "10.232.1.1/24")
        lab.add_addr("r2", "eth1", "10.232.2.1/24")
        lab.add_addr("r2", "lo", f"{VIP.address}/32")
        for name in ("c", *RS):
            lab.run(name, "ip", "neigh", "flush", "all")
        holder.stdin.write(b"go\n")
        await holder.stdin.drain()
        again = json.loads(await asyncio.wait_for(holder.stdout.readline(), 60))
        if seed2 == SEED:
            assert again == first  # every connection alive, on its own real server
        else:  # flows hashed elsewhere reach a server that never saw them: reset
            assert again != first and set(again) - {"rs1", "rs2"}, again
        holder.stdin.close()
        await holder.wait()
    finally:
        r1.close()
        r2.close()


async def test_mh_with_no_server_serving_refuses_or_sends_to_the_sorry_server(lab):
    _, cfg = config()
    down = desired_table(cfg, {}, {}, seed=SEED)
    assert all(not s.dests for s in down.values())
    backend = await program(lab, "r1", down)
    try:
        assert diff(await backend.read(), down) == []

        async def connect(count: int) -> dict:
            proc = await lab.arun("c", sys.executable, "-c", CLIENT, VIP.address, "8080",
                                  str(count))
            return json.loads(proc.stdout)

        assert await connect(10) == {"names": {}, "refused": 10, "failed": 0}
        # every weight 0 (drained): no slot either, refused as well
        drained = desired_table(cfg, all_up(cfg), {("web", "rs1"): "drain",
                                                   ("web", "rs2"): "drain"}, seed=SEED)
        await backend.apply(diff(await backend.read(), drained))
        assert await connect(10) == {"names": {}, "refused": 10, "failed": 0}
        # with a sorry server every new connection goes there, beside the drained ones
        _, sorry_cfg = config(f"    sorry_server = {RS['rs3']}\n")
        sorry = desired_table(sorry_cfg, all_up(sorry_cfg), {("web", "rs1"): "drain",
                                                             ("web", "rs2"): "drain"}, seed=SEED)
        assert DestKey(RS["rs3"], 8080) in sorry[VIP].dests
        await backend.apply(diff(await backend.read(), sorry))
        assert diff(await backend.read(), sorry) == []
        assert await connect(10) == {"names": {"rs3": 10}, "refused": 0, "failed": 0}
    finally:
        backend.close()
