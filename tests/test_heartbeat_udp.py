"""HeartbeatService with real UDP sockets, each router on its own loopback address."""

import asyncio
import random
import socket
import time

import pytest

from agent.heartbeat import (
    REASONS,
    BindError,
    ConfigError,
    Heartbeat,
    HeartbeatConfig,
    HeartbeatService,
    Incarnation,
    LocalState,
    PeerDead,
    PeerRestarted,
    PeerStatus,
    encode,
)

KEY = b"udp-test-key-0123456789abcdef"
KEEPALIVE = 0.05
DEADTIME = 0.5


async def until(pred, what: str, limit: float = 10.0) -> None:
    """Wait (generously) until pred() is true."""
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


class Router:
    """One HeartbeatService plus the state it announces and the changes it reported."""

    def __init__(self, config: HeartbeatConfig, **kw):
        self.state = LocalState("backup", 0, True)
        self.changes = []
        self.service = HeartbeatService(
            config, KEY, lambda: self.state, on_change=self.changes.append, **kw
        )

    def announce(self, role, term):
        self.state = LocalState(role, term, True)
        self.service.send_now()

    def dropped(self, reason):
        return self.service.counters().dropped[reason]


@pytest.fixture
def net():
    """A random loopback /24 and a free port, so parallel runs do not collide."""
    prefix = f"127.{random.randint(64, 250)}.{random.randint(0, 255)}."
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((prefix + "1", 0))
        port = s.getsockname()[1]
    return prefix, port


def config(net, node, peers, n=None, **kw) -> HeartbeatConfig:
    """Router ``rN`` lives on prefix.N; ``peers`` maps names to address suffixes."""
    prefix, port = net
    return HeartbeatConfig(
        cluster="lb1",
        node=node,
        port=port,
        keepalive=KEEPALIVE,
        deadtime=DEADTIME,
        freshness=5.0,
        local_addresses=(prefix + str(n or node[1:]),),
        peers={p: tuple(prefix + str(s) for s in sfx) for p, sfx in peers.items()},
        **kw,
    )


def trio(net):
    return {
        name: Router(config(net, name, {p: (p[1:],) for p in ("r1", "r2", "r3") if p != name}))
        for name in ("r1", "r2", "r3")
    }


@pytest.fixture
async def routers(net):
    started = []

    async def start(*rs):
        for r in rs:
            await r.service.start()
            started.append(r)
        return rs

    yield start
    for r in started:
        await r.service.stop()


def udp_sockets_on(port: int) -> list[str]:
    """Local addresses of every IPv4 UDP socket on ``port`` (from /proc/net/udp)."""
    found = []
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            hexaddr, hexport = line.split()[1].split(":")
            if int(hexport, 16) == port:
                found.append(socket.inet_ntoa(bytes.fromhex(hexaddr)[::-1]))
    return found


async def test_three_routers_see_each_other_and_ack(net, routers):
    rs = trio(net)
    await routers(*rs.values())
    rs["r1"].announce("active", 3)
    everyone = [(a, b) for a in rs for b in rs if a != b]
    await until(lambda: all(rs[a].service.alive(b) for a, b in everyone), "all see all")
    await until(lambda: all(r.service.all_acked_within(DEADTIME) for r in rs.values()), "all acked")
    await until(lambda: rs["r3"].service.active_claims() == {"r1": 3}, "r3 sees r1 active")
    assert rs["r2"].service.active_claims() == {"r1": 3}
    assert rs["r1"].service.active_claims() == {}
    view = rs["r2"].service.table.view("r1")
    assert view.address == rs["r1"].service.config.local_addresses[0]
    assert view.role == "active" and view.term == 3 and view.etcd_ok
    for r in rs.values():
        c = r.service.counters()
        assert c.sent > 0 and c.accepted > 0 and sum(c.dropped.values()) == 0
        assert set(c.dropped) == set(REASONS)
    # Nothing listens on a wildcard: exactly our three addresses hold the port.
    expected = sorted(r.service.config.local_addresses[0] for r in rs.values())
    assert sorted(udp_sockets_on(net[1])) == expected


async def test_stopped_router_goes_dead_and_its_restart_is_seen(net, routers):
    rs = trio(net)
    await routers(*rs.values())
    await until(lambda: rs["r1"].service.alive_peers() == {"r2", "r3"}, "r1 sees both")
    await until(lambda: rs["r1"].service.all_acked_within(DEADTIME), "r1 acked by both")
    await rs["r3"].service.stop()
    await until(lambda: any(isinstance(c, PeerDead) for c in rs["r1"].changes), "r1: r3 dead")
    await until(lambda: not rs["r2"].service.alive("r3"), "r2: r3 dead")
    assert [c.peer for c in rs["r1"].changes if isinstance(c, PeerDead)] == ["r3"]
    assert rs["r1"].service.alive("r2")
    await until(lambda: not rs["r1"].service.all_acked_within(DEADTIME), "r3 acks expire")
    assert rs["r1"].service.all_acked_within(DEADTIME, ["r2"])

    again = Router(rs["r3"].service.config)  # same router, new run: seq restarts at 1
    await routers(again)
    await until(lambda: rs["r1"].service.alive("r3"), "r1 sees r3 back")
    restarts = [c for c in rs["r1"].changes if isinstance(c, PeerRestarted)]
    assert restarts and restarts[-1].incarnation == again.service.incarnation
    await until(lambda: rs["r1"].service.all_acked_within(DEADTIME), "r3 acks the new run")
    assert rs["r1"].dropped("replay") == 0


class Relay(asyncio.DatagramProtocol):
    """Stands in for r2's address in r1's config: forwards to r2 and keeps a copy."""

    def __init__(self, target):
        self.target = target
        self.captured = []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.captured.append(data)
        self.transport.sendto(data, self.target)


async def test_forged_and_replayed_packets_are_dropped_and_change_nothing(net, routers):
    prefix, port = net
    r1 = Router(config(net, "r1", {"r2": (9,)}))  # r1 reaches r2 only through the relay
    r2 = Router(config(net, "r2", {"r1": (1,)}))
    loop = asyncio.get_running_loop()
    transport, relay = await loop.create_datagram_endpoint(
        lambda: Relay((prefix + "2", port)), local_addr=(prefix + "9", port)
    )
    try:
        await routers(r1, r2)
        r1.announce("backup", 1)
        await until(lambda: r2.service.table.view("r1") is not None, "r2 hears r1")
        old = relay.captured[-1]  # a genuine packet saying "backup, term 1"
        r1.announce("active", 2)
        await until(lambda: r2.service.active_claims() == {"r1": 2}, "r2 sees r1 active")
        before = r2.service.table.view("r1")
        n_changes = len(r2.changes)

        def send(data):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
                raw.bind((prefix + "66", 0))
                raw.sendto(data, (prefix + "2", port))

        send(old)  # replay
        await until(lambda: r2.dropped("replay") == 1, "replay counted")

        wall = time.time()
        forged = Heartbeat("lb1", "r1", Incarnation.new(wall + 1), 1, wall, "active", 99, True, {})
        send(encode(forged, b"attacker-guessed-key-000000000"))
        await until(lambda: r2.dropped("bad_mac") == 1, "forgery counted")
        tampered = bytearray(old)
        tampered[len(tampered) // 2] ^= 0x20
        send(bytes(tampered))
        await until(lambda: r2.dropped("bad_mac") == 2, "tampering counted")
        send(b"GET / HTTP/1.0\r\n\r\n" * 3)
        await until(lambda: r2.dropped("malformed") == 1, "junk counted")
        stranger = Heartbeat("lb1", "r9", Incarnation.new(wall), 1, wall, "active", 5, True)
        send(encode(stranger, KEY))
        await until(lambda: r2.dropped("unknown_sender") == 1, "stranger counted")
        other = Heartbeat("lb2", "r1", Incarnation.new(wall), 1, wall, "active", 5, True)
        send(encode(other, KEY))
        await until(lambda: r2.dropped("wrong_cluster") == 1, "other cluster counted")

        after = r2.service.table.view("r1")
        assert after.incarnation == before.incarnation == r1.service.incarnation
        assert (after.role, after.term) == ("active", 2)
        assert r2.service.table.last_active_claim().term == 2
        assert r2.service.active_claims() == {"r1": 2}
        assert r2.service.alive("r1")
        late = [c for c in r2.changes[n_changes:] if isinstance(c, PeerStatus)]
        assert late == []  # none of the bad packets produced a status change
        assert r2.dropped("stale") == 0
    finally:
        transport.close()


async def test_skewed_clock_is_stale_and_not_alive(net, routers):
    r1 = Router(config(net, "r1", {"r2": (2,)}))
    r2 = Router(config(net, "r2", {"r1": (1,)}), wall=lambda: time.time() + 60)
    await routers(r1, r2)
    await until(lambda: r1.dropped("stale") >= 3 and r2.dropped("stale") >= 3, "stale counted")
    assert not r1.service.alive("r2") and not r2.service.alive("r1")
    assert r1.service.counters().accepted == 0


async def test_failing_state_callback_skips_rounds_but_service_survives(net, routers):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) <= 3:
            raise RuntimeError("state not ready")
        return LocalState("starting")

    r1 = HeartbeatService(config(net, "r1", {"r2": (2,)}), KEY, flaky)
    r2 = Router(config(net, "r2", {"r1": (1,)}))
    await routers(r2)
    await r1.start()
    try:
        await until(lambda: r2.service.alive("r1"), "r1 heard despite early failures")
        assert r1.counters().state_errors == 3
        assert r2.service.table.view("r1").role == "starting"
    finally:
        await r1.stop()


async def test_bind_errors_are_clear(net, routers):
    prefix, port = net
    r1 = Router(config(net, "r1", {"r2": (2,)}))
    await routers(r1)
    twin = HeartbeatService(config(net, "r1", {"r2": (2,)}), KEY, lambda: LocalState("backup"))
    with pytest.raises(BindError, match="already using it"):
        await twin.start()
    assert not twin.running
    absent = HeartbeatConfig(
        cluster="lb1",
        node="r1",
        port=port,
        keepalive=KEEPALIVE,
        deadtime=DEADTIME,
        local_addresses=(prefix + "7", "192.0.2.1"),  # TEST-NET: not on this host
        peers={"r2": (prefix + "2",)},
    )
    svc = HeartbeatService(absent, KEY, lambda: LocalState("backup"))
    with pytest.raises(BindError, match=r"192\.0\.2\.1 .*configured on this host"):
        await svc.start()
    with pytest.raises(ConfigError, match="at least 16"):
        HeartbeatService(absent, b"short", lambda: LocalState("backup"))
    assert prefix + "7" not in udp_sockets_on(port)  # the socket bound first was closed
    assert r1.service.running  # the first one is unaffected
