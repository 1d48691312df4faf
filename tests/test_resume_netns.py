"""The resume nudge with real namespaces, nftables NAT and Linux TCP (agent/resume):

    client 10.233.1.2 --[cbr]-- router (DNAT 10.233.100.1:7 -> .2.11:7) --[sbr]-- server

A line-echo connection through the VIP is blacked out in the router for 3.8 s: the
client's retransmission timer backs off (0.2 + 0.4 + 0.8 + 1.6 s), so its next
retransmission is due 3.2 s later, about 2.4 s after the blackout ends. The router's
Resumer, fed with the router's own conntrack table, must make it retransmit at once; with
its licence over, it must send nothing. A second, dead connection (closed since) in the
list must not delay the first.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from support import netlab

from agent.resume import Flow, Resumer, synced_flows

pytestmark = pytest.mark.netns

VIP = "10.233.100.1"
BLACKOUT = 3.8

ECHO = r"""
import socket, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 7)); srv.listen()
def serve(c):
    while (data := c.recv(4096)):
        c.sendall(data)
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""

NAT = f"""
table ip lab {{
  chain pre {{ type nat hook prerouting priority dstnat;
    ip daddr {VIP} tcp dport 7 dnat to 10.233.2.11:7; }}
  chain gate {{ type filter hook forward priority 0; }}
}}
"""


async def nudge(licence: str) -> tuple[int, dict]:
    """In the router: the Resumer on the router's own conntrack table, ``licence``
    "held", "none" or "late" (lost to a stall at the start, back 0.5 s later)."""
    resumer = Resumer(patience=1.0)
    try:
        flows = await synced_flows("nftables", [VIP])
        # A connection closed since: its ends never answer, and must hold nobody up.
        gone = Flow(("10.233.1.2", 1), (VIP, 7), ("10.233.2.11", 7), ("10.233.1.2", 1))
        flows = [*flows, gone]
        start = time.monotonic()

        def licence_end() -> float:
            now = time.monotonic()
            if licence == "none" or (licence == "late" and now < start + 0.5):
                return now - 1
            return now + 10

        ends = await resumer.resume(flows, licence_end)
        st = resumer.stats
        return ends, {"flows": st.flows, "answered": st.answered, "errors": st.errors}
    finally:
        resumer.close()


@pytest.fixture
async def lab():
    async with netlab.Lab("rsm") as lab:
        for br in ("cbr", "sbr"):
            lab.add_bridge(br)
        for ns in ("client", "router", "server"):
            lab.add_ns(ns)
        lab.connect("client", bridge="cbr", addrs=["10.233.1.2/24"])
        lab.connect("router", "eth0", bridge="cbr", addrs=["10.233.1.1/24"])
        lab.connect("router", "eth1", bridge="sbr", addrs=["10.233.2.1/24"])
        lab.connect("server", bridge="sbr", addrs=["10.233.2.11/24"])
        lab.run("client", "ip", "route", "add", "default", "via", "10.233.1.1")
        lab.run("server", "ip", "route", "add", "default", "via", "10.233.2.1")
        lab.sysctl("router", "net.ipv4.ip_forward", 1)
        await lab.arun("router", "sh", "-c", f"echo '{NAT}' | nft -f -")
        await lab.spawn("server", "python3", "-c", ECHO)
        yield lab


async def _stalled_line(lab: netlab.Lab, licence: str) -> tuple[float, int, dict]:
    """Open a connection, black it out, nudge (or not); seconds from the end of the
    blackout until the echo of the line sent inside it."""
    async with await lab.worker("client") as client, await lab.worker("router") as router:
        await client.call("asyncio:sleep", 0.3)  # the echo server listening
        ref = await client.keep("test_resume_netns:EchoClient")
        await client.call_method(ref, "open", VIP, 7)
        await lab.arun("router", "nft", "add", "rule", "ip", "lab", "gate", "drop")
        await client.call_method(ref, "send", b"x\n")
        await asyncio.sleep(BLACKOUT)
        await lab.arun("router", "nft", "flush", "chain", "ip", "lab", "gate")
        healed = time.monotonic()
        ends, stats = await router.call("test_resume_netns:nudge", licence)
        await client.call_method(ref, "wait_echo", 8.0)
        return time.monotonic() - healed, ends, stats


class EchoClient:
    """A line-echo client kept in the client's worker."""

    async def open(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        self.writer.write(b"hello\n")
        assert await self.reader.readline() == b"hello\n"

    async def send(self, line: bytes) -> None:
        self.line = line
        self.writer.write(line)

    async def wait_echo(self, limit: float) -> None:
        assert await asyncio.wait_for(self.reader.readline(), limit) == self.line


async def test_nudged_connection_resumes_at_once(lab: netlab.Lab) -> None:
    took, ends, stats = await _stalled_line(lab, "held")
    assert stats == {"flows": 2, "answered": 2, "errors": {}}
    assert ends == 2
    # Unnudged, the client retransmits at 0.2 + 0.4 + 0.8 + 1.6 + 3.2 = 6.2 s after the
    # loss, 2.4 s after the blackout; nudged, within a round trip of the ICMP.
    assert took < 1.0, f"the line waited {took:.2f} s after the blackout"


async def test_no_licence_no_packets(lab: netlab.Lab) -> None:
    took, ends, stats = await _stalled_line(lab, "none")
    assert ends == 0 and stats["flows"] == 2 and stats["answered"] == 0
    assert took > 1.5, f"resumed after {took:.2f} s without a nudge"


async def test_a_licence_lost_to_a_stall_is_waited_for(lab: netlab.Lab) -> None:
    took, ends, stats = await _stalled_line(lab, "late")
    assert stats == {"flows": 2, "answered": 2, "errors": {}} and ends == 2
    assert took < 1.5, f"the line waited {took:.2f} s after the blackout"
