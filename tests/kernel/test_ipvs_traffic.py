"""IPVS traffic counters over netlink (the metrics' kernel traffic): a real kernel counts
packets sent to a virtual service; the backend reads them per service and real server."""

from __future__ import annotations

import asyncio
import sys

import pytest

from agent.dataplane.ipvs import IpvsBackend
from agent.dataplane.table import DestKey, DestSpec, Service, ServiceKey, ServiceSpec, diff

pytestmark = pytest.mark.ipvs

DNS = ServiceKey("udp", "10.0.0.1", 53)
USED, IDLE = DestKey("10.1.0.1", 53), DestKey("10.1.0.2", 53)
SEND = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(b"x" * 100, ("10.0.0.1", 53))
"""


async def test_counters_per_service_and_real_server(backend: IpvsBackend, witness) -> None:
    # the real servers are routed nowhere useful (busybox ip in the guest: no veth): IPVS
    # schedules and counts what the client (a socket in the namespace: LOCAL_OUT) sends
    witness.run("ip addr add 10.0.0.1/32 dev lo && ip route add 10.1.0.0/24 dev lo")
    want = {DNS: Service(ServiceSpec("wrr"), {USED: DestSpec(1, "masq"),
                                              IDLE: DestSpec(0, "masq")})}
    await backend.apply(diff(await backend.read(), want))
    before = await asyncio.to_thread(backend.traffic)
    assert before[DNS].total.packets_in == 0 and set(before[DNS].dests) == {USED, IDLE}
    witness.run(f"{sys.executable} -c '{SEND}'")
    # the kernel's estimator copies its per-cpu counters into what a dump reports every 2 s
    for _ in range(50):
        after = await asyncio.to_thread(backend.traffic)
        if after[DNS].total.packets_in:
            break
        await asyncio.sleep(0.1)
    total, used, idle = after[DNS].total, after[DNS].dests[USED], after[DNS].dests[IDLE]
    assert total.connections == used.connections == 1
    assert total.packets_in == used.packets_in == 3
    assert total.bytes_in == used.bytes_in >= 3 * 128  # 100 bytes of data + UDP + IP
    assert idle.connections == idle.packets_in == 0
    assert used.active is not None and used.inactive is not None
    assert used.active + used.inactive == 1
    # ipvsadm, the kernel's independent witness: Conns InPkts OutPkts InBytes OutBytes
    line = next(x.split() for x in witness.run("ipvsadm -L -n --stats --exact").splitlines()
                if x.startswith("UDP"))
    assert [int(v) for v in line[2:7]] == [total.connections, total.packets_in,
                                           total.packets_out, total.bytes_in, total.bytes_out]
    # Without the real servers (past --metrics-max-servers): the same totals, no dump each.
    totals = await asyncio.to_thread(backend.traffic, servers=False)
    assert totals[DNS].total == total and totals[DNS].dests == {}
