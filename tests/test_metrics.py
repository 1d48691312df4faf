"""The agent's metrics, pure parts: kernel traffic (nftables sets, IPVS netlink stats),
effective real server state, leader-change reasons, failover detection, etcd op labels."""

from __future__ import annotations

import struct
from typing import Any

from agent.dataplane.ipvs import codec as c
from agent.dataplane.nft import traffic as nft
from agent.dataplane.stats import ServiceTraffic, Traffic
from agent.dataplane.table import DestKey, DestSpec, Service, ServiceKey
from agent.metrics import health as health_metrics
from agent.metrics import traffic as traffic_metrics
from agent.role import Activate, Campaign, Leader, Peer, Role, RoleMachine, World
from agent.view import leader_change
from cluster.documents import LeaderKey
from cluster.etcd.client import op_of
from cluster.health import Health
from cluster.model import LvsConfig
from cluster.timing import Timing

WEB = ServiceKey("tcp", "10.0.0.100", 80)
DNS = ServiceKey("udp", "10.0.0.100", 53)
MARK = ServiceKey("fwmark", fwmark=7)
A, B = DestKey("10.0.1.1", 8080), DestKey("10.0.1.2", 8080)


def services() -> dict[ServiceKey, Service]:
    return {WEB: Service(dests={A: DestSpec(3), B: DestSpec(0), DestKey("10.0.1.3", 80):
                                DestSpec(1, "route")}),
            DNS: Service(dests={DestKey("10.0.1.1", 53): DestSpec()}),
            MARK: Service(dests={DestKey("10.0.1.4", 0): DestSpec()})}


# ---------------------------------------------------------------- nftables sets


def test_counted_holds_port_services_and_their_servers_whatever_the_forwarding() -> None:
    assert nft.counted(services()) == {
        ("v", 4, "10.0.0.100", "tcp", 80), ("v", 4, "10.0.0.100", "udp", 53),
        ("r", 4, "10.0.0.100", "tcp", 80, "10.0.1.1", 8080),
        ("r", 4, "10.0.0.100", "tcp", 80, "10.0.1.2", 8080),  # weight 0: still counted
        ("r", 4, "10.0.0.100", "tcp", 80, "10.0.1.3", 80),  # route: DNAT here (masq used)
        ("r", 4, "10.0.0.100", "udp", 53, "10.0.1.1", 53),
    }


def _names(cmds: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(verb, body["element"]["name"]) for cmd in cmds for verb, body in cmd.items()]


def test_a_new_server_adds_only_its_elements_and_nothing_is_flushed() -> None:
    have = nft.counted(services())
    more = dict(services())
    more[WEB] = Service(dests={**more[WEB].dests, DestKey("10.0.1.9", 8080): DestSpec()})
    cmds = nft.commands("piranha", have, nft.counted(more))
    assert _names(cmds) == [("add", "ti4"), ("add", "to4"), ("add", "tn4")]
    assert cmds[0]["add"]["element"]["elem"] == [
        {"concat": ["10.0.0.100", "tcp", 80, "10.0.1.9", 8080]}]
    assert nft.commands("piranha", have, have) == []
    gone = nft.commands("piranha", have, nft.counted({WEB: services()[WEB]}))
    assert {verb for verb, _ in _names(gone)} == {"delete"}
    assert "flush" in {verb for cmd in nft.commands("piranha", None, have) for verb in cmd}


def listing(items: frozenset[nft.Counted], counts: dict[tuple[str, tuple[Any, ...]],
            tuple[int, int]] | None = None) -> dict[str, dict[str, Any]]:
    """Sets as ``nft -j list set`` shows them holding ``items``."""
    sets: dict[str, dict[str, Any]] = {name: {"name": name, "type": nft.set_type(name),
                                              "stmt": [{"counter": None}]}
                                       for name in nft.SETS}
    for item in sorted(items, key=repr):
        for name, key in nft.elements(item):
            packets, nbytes = (counts or {}).get((name, key), (0, 0))
            sets[name].setdefault("elem", []).append({"elem": {
                "val": {"concat": list(key)}, "counter": {"packets": packets, "bytes": nbytes}}})
    return sets


def test_sets_read_back_and_junk_or_half_items_are_rewritten() -> None:
    items = nft.counted(services())
    assert nft.set_problems(listing(items)) == []
    assert nft.parse_sets(listing(items)) == (items, [])
    half = listing(items)
    half["to4"]["elem"].pop()
    held, problems = nft.parse_sets(half)
    assert held is None and problems
    junk = listing(items)
    junk["ti4"]["elem"].append({"elem": {"val": "nonsense"}})
    assert nft.parse_sets(junk)[0] is None
    no_counter = listing(items)
    no_counter["tv4"]["stmt"] = []
    assert nft.set_problems(no_counter) == ["traffic set tv4 missing or wrong"]


def test_counters_add_up_per_service_and_server() -> None:
    vs = ("10.0.0.100", "tcp", 80)
    rs = (*vs, "10.0.1.1", 8080)
    counts = {("tv4", (*vs, "original", "new")): (10, 600),
              ("tv4", (*vs, "original", "established")): (90, 9000),
              ("tv4", (*vs, "reply", "established")): (80, 64000),
              ("ti4", rs): (60, 5000), ("to4", rs): (50, 40000), ("tn4", rs): (7, 420)}
    read = nft.read_counters(listing(nft.counted(services()), counts))
    assert read[WEB].total == Traffic(10, 100, 9600, 80, 64000)
    assert read[WEB].dests[A] == Traffic(7, 60, 5000, 50, 40000)
    assert read[WEB].dests[B] == Traffic(0, 0, 0, 0, 0)
    assert MARK not in read


def test_traffic_rules_are_one_per_set_and_protocol() -> None:
    comments = [comment for comment, _ in nft.rules()]
    assert len(comments) == len(set(comments)) == 2 * len(nft.SETS)


# ---------------------------------------------------------------- IPVS netlink stats


def _stats(u64: bool, conns: int, inpkts: int, outpkts: int, inbytes: int,
           outbytes: int) -> bytes:
    small = "=Q" if u64 else "=I"
    return b"".join([
        c.attr(c.STATS_CONNS, struct.pack(small, conns)),
        c.attr(c.STATS_INPKTS, struct.pack(small, inpkts)),
        c.attr(c.STATS_OUTPKTS, struct.pack(small, outpkts)),
        c.attr(c.STATS_INBYTES, struct.pack("=Q", inbytes)),
        c.attr(c.STATS_OUTBYTES, struct.pack("=Q", outbytes)),
    ])


def test_ipvs_stats64_preferred_and_dest_connection_counts() -> None:
    attrs = c.parse_attrs(
        c.nest(c.DEST_STATS, _stats(False, 1, 2, 3, 4, 5))
        + c.nest(c.DEST_STATS64, _stats(True, 2**33, 20, 30, 2**40, 50))
        + c.u32(c.DEST_ACTIVE_CONNS, 4) + c.u32(c.DEST_INACT_CONNS, 9))
    got = c.decode_stats(attrs, c.DEST_STATS, c.DEST_STATS64, c.DEST_ACTIVE_CONNS,
                         c.DEST_INACT_CONNS)
    assert got == Traffic(2**33, 20, 2**40, 30, 50, 4, 9)


def test_ipvs_stats_of_old_kernels_and_none() -> None:
    attrs = c.parse_attrs(c.nest(c.SVC_STATS, _stats(False, 1, 2, 3, 2**35, 5)))
    assert c.decode_stats(attrs, c.SVC_STATS, c.SVC_STATS64) == Traffic(1, 2, 2**35, 3, 5)
    assert c.decode_stats({}, c.SVC_STATS, c.SVC_STATS64) == Traffic(0, 0, 0, 0, 0)


# ---------------------------------------------------------------- metric families


def cfg() -> LvsConfig:
    server = {"address": "10.0.1.1", "port": 8080}
    return LvsConfig(virtuals=(
        {"name": "web", "address": "10.0.0.100 eth0:1", "port": 80, "servers": (
            {"name": "a", **server}, {"name": "a2", **server},  # same address: one dest
            {"name": "b", "address": "10.0.1.2", "port": 8080},
            {"name": "off", "address": "10.0.1.5", "active": False})},
    ))


def samples(families: Any) -> dict[str, float]:
    return {f"{s.name}{sorted(s.labels.items())}": s.value
            for m in families for s in m.samples}


def test_traffic_families_use_the_names_of_lvs_cf() -> None:
    read = {WEB: ServiceTraffic(Traffic(3, 30, 300, 20, 200), {
        A: Traffic(2, 20, 200, 10, 100, active=1, inactive=0),
        DestKey("10.9.9.9", 1): Traffic(1, 1, 1, 1, 1)}),  # not configured: left out
        ServiceKey("tcp", "10.9.9.9", 1): ServiceTraffic(Traffic(1, 1, 1))}  # not ours
    got = samples(traffic_metrics.families(read, cfg()))
    assert got == {
        "lvs_virtual_connections_total[('virtual', 'web')]": 3,
        "lvs_virtual_packets_in_total[('virtual', 'web')]": 30,
        "lvs_virtual_packets_out_total[('virtual', 'web')]": 20,
        "lvs_virtual_bytes_in_total[('virtual', 'web')]": 300,
        "lvs_virtual_bytes_out_total[('virtual', 'web')]": 200,
        "lvs_real_server_connections_total[('server', 'a'), ('virtual', 'web')]": 2,
        "lvs_real_server_packets_in_total[('server', 'a'), ('virtual', 'web')]": 20,
        "lvs_real_server_packets_out_total[('server', 'a'), ('virtual', 'web')]": 10,
        "lvs_real_server_bytes_in_total[('server', 'a'), ('virtual', 'web')]": 200,
        "lvs_real_server_bytes_out_total[('server', 'a'), ('virtual', 'web')]": 100,
        "lvs_real_server_active_connections[('server', 'a'), ('virtual', 'web')]": 1,
        "lvs_real_server_inactive_connections[('server', 'a'), ('virtual', 'web')]": 0,
    }


def test_traffic_cache_reads_the_kernel_once_a_second() -> None:
    now = [0.0]
    reads = []

    class Backend:
        def traffic(self, servers: bool = True) -> dict[ServiceKey, ServiceTraffic]:
            reads.append(now[0])
            if len(reads) == 3:
                raise OSError("netlink went away")
            return {}

    cache = traffic_metrics.TrafficCache(clock=lambda: now[0])
    for t in (0.0, 0.5, 0.99, 1.0, 2.5):
        now[0] = t
        result = cache.get(Backend())
    assert reads == [0.0, 1.0, 2.5] and result is None and cache.errors == 1
    assert cache.get(object()) is None  # a backend without counters


def test_a_slow_failed_traffic_read_backs_off_as_a_slow_read_does() -> None:
    """A read that failed after 10 s (nft's listing timed out) is not tried again at the
    next scrape: each would wait as long."""
    now = [100.0]
    reads = []

    class Backend:
        def traffic(self, servers: bool = True) -> dict[ServiceKey, ServiceTraffic]:
            reads.append(now[0])
            now[0] += 10.0  # the read takes 10 s, then fails
            raise TimeoutError("nft: no answer")

    cache = traffic_metrics.TrafficCache(clock=lambda: now[0])
    assert cache.get(Backend()) is None and reads == [100.0]
    for t in (111.0, 130.0, 149.0):
        now[0] = t
        assert cache.get(Backend()) is None
    assert reads == [100.0]  # backed off SPREAD x 10 s
    now[0] = 151.0
    cache.get(Backend())
    assert reads == [100.0, 151.0] and cache.errors == 2


def test_traffic_cache_keeps_only_totals_when_no_server_is_shown() -> None:
    """Past --metrics-max-servers only the services' totals are shown: only they are kept
    (40,000 real servers' counters stayed resident between scrapes); a caller that shows
    the servers again gets a read with them."""
    now = [0.0]
    reads = []
    web = ServiceKey("tcp", "10.0.0.100", 80)
    one = Traffic(3, 30, 300)
    read = {web: ServiceTraffic(one, {DestKey("10.0.1.1", 80): one})}

    class Backend:
        def traffic(self, servers: bool = True) -> dict[ServiceKey, ServiceTraffic]:
            reads.append(now[0])
            return read

    cache = traffic_metrics.TrafficCache(clock=lambda: now[0])
    totals = cache.get(Backend(), servers=False)
    assert totals == {web: ServiceTraffic(one)} and reads == [0.0]
    assert cache.get(Backend(), servers=False) == totals and reads == [0.0]  # cached
    assert cache.get(Backend()) == read and reads == [0.0, 0.0]  # the servers: read again
    assert cache.get(Backend(), servers=False) == read and reads == [0.0, 0.0]


def test_effective_state_and_weight() -> None:
    health = {("web", "a"): Health("up", weight=5), ("web", "b"): Health("up")}
    admin = {("web", "a2"): "drain"}
    assert health_metrics.effective(cfg(), health, admin) == {
        ("web", "a"): ("up", 5), ("web", "a2"): ("drained", 0), ("web", "b"): ("up", 1)}
    assert health_metrics.effective(cfg(), {}, {("web", "b"): "disable"})[("web", "b")] == (
        "disabled", 0)
    assert health_metrics.effective(cfg(), {}, {})[("web", "a")] == ("down", 0)


# ---------------------------------------------------------------- leaders, failover, etcd


def test_leader_change_reasons() -> None:
    r1, r2 = LeaderKey("r1", 10, 1), LeaderKey("r2", 12, 2)
    assert leader_change(None, r1, None) == "first"
    assert leader_change(r1, r1, None) is None
    assert leader_change(r1, LeaderKey("r1", 11, 3), None) == "rekey"
    assert leader_change(r1, r2, ("r1", 10)) == "resigned"
    assert leader_change(r1, r2, ("r1", 9)) == "lost"
    assert leader_change(r1, r2, None) == "lost"


T = Timing()


def world(now: float, **kw: Any) -> World:
    base = dict(now=now, me="r2", priority=100, lease_deadline=now + 1.9,
                lease_sent=now - 0.1, lease=8, etcd_ok=True, leader_known=True,
                started_at=0.0, peers=(Peer("r1", 200, alive=True, registered=True),))
    base.update(kw)
    return World(**base)  # type: ignore[arg-type]


def test_failover_detection_is_when_the_old_active_is_judged_gone() -> None:
    m = RoleMachine(T)
    r1 = Leader("r1", 5, 7)
    claim = Peer("r1", 200, alive=True, registered=True, active_heard=99.9, active_term=5)
    m.step(world(100.0, leader=r1, last_term=5, peers=(claim,)))
    assert m.detected_at is None
    # the key is gone but r1 still claims active in fresh heartbeats: not gone yet
    m.step(world(100.5, leader=None, leader_absent_since=100.5, last_term=5, peers=(claim,)))
    assert m.detected_at is None
    silent = Peer("r1", 200, alive=False, registered=False, active_heard=99.9, active_term=5)
    actions, _ = m.step(world(102.0, leader=None, leader_absent_since=100.5, last_term=5,
                              peers=(silent,)))
    assert m.detected_at == 102.0 and actions == [Campaign()]
    m.step(world(102.1, leader=None, leader_absent_since=100.5, last_term=5,
                 peers=(silent,)))
    assert m.detected_at == 102.0  # the first instant counts
    m.won(9, 8)
    actions, _ = m.step(world(104.5, leader=Leader("r2", 9, 8), last_term=9,
                              peers=(silent,)))
    assert actions == [Activate(9)] and actions[0].detected == 102.0
    assert m.role is Role.ACTIVE and m.detected_at is None


def test_no_failover_is_measured_on_a_cold_start() -> None:
    m = RoleMachine(T)
    lone = world(10.0, leader=None, leader_absent_since=0.0, last_term=0, peers=())
    assert m.step(lone)[0] == [Campaign()]
    m.won(3, 8)
    actions, _ = m.step(world(10.1, leader=Leader("r2", 3, 8), last_term=3, peers=()))
    assert actions == [Activate(3)] and actions[0].detected is None


def test_a_silent_key_holder_is_detected_before_its_key_goes() -> None:
    m = RoleMachine(T)
    dead = Peer("r1", 200, alive=False, registered=True)
    m.step(world(50.0, leader=Leader("r1", 5, 7), last_term=5, peers=(dead,)))
    assert m.detected_at == 50.0
    alive = Peer("r1", 200, alive=True, registered=True)
    m.step(world(50.5, leader=Leader("r1", 5, 7), last_term=5, peers=(alive,)))
    assert m.detected_at is None


def test_etcd_operation_labels() -> None:
    assert [op_of(w) for w in ("get /lvs/x", "get /lvs/*", "put /lvs/x", "delete /lvs/x",
                               "transaction", "status", "lease grant", "lease revoke",
                               "authenticate", "something new")] == [
        "get", "get", "put", "delete", "txn", "status", "grant", "revoke", "auth", "other"]


# ---------------------------------------------------------------- docs/metrics.md


def test_every_series_of_a_real_pulse_is_documented(monkeypatch: Any) -> None:
    """A collector run over a real (not started) Pulse: each family it yields is in
    docs/metrics.md with its labels. (The lab test checks a running agent both ways.)"""
    import asyncio

    from prometheus_client import generate_latest

    from agent.metrics import registry_of
    from agent.pulse import AgentOptions, Pulse
    from cluster.etcd.settings import settings_from
    from tests.support.metrics_doc import documented, scraped

    monkeypatch.setenv("LVS_HEARTBEAT_KEY", "k" * 32)

    async def scrape() -> str:
        p = Pulse(AgentOptions(settings=settings_from("http://127.0.0.1:9"), cluster="c",
                               node="r1"))
        p.config = cfg()
        p.health.configure(p.config)
        return generate_latest(registry_of(p)).decode()

    docs = documented()
    got = scraped(asyncio.run(scrape()))
    assert set(got) <= set(docs), sorted(set(got) - set(docs))
    for name, labels in got.items():
        assert labels is None or labels == docs[name][0], name
    assert {"lvs_real_server_state", "lvs_build_info", "lvs_failover_duration_seconds"} <= set(got)


def test_heartbeats_dropped_are_counted_by_the_peer_of_their_source() -> None:
    from agent.heartbeat import HeartbeatService, LocalState
    from agent.heartbeat.config import HeartbeatConfig

    config = HeartbeatConfig(cluster="lb1", node="r1", port=694, keepalive=0.05,
                             deadtime=0.5, freshness=5.0, local_addresses=("10.9.0.1",),
                             peers={"r2": ("10.9.0.2", "10.9.1.2"), "r3": ("10.9.0.3",)})
    service = HeartbeatService(config, b"k" * 32, lambda: LocalState("backup"))
    for source in ("10.9.0.2", "10.9.1.2", "10.9.0.3", "10.9.9.9"):  # r2 on both links
        service._handle(b"GET / HTTP/1.0\r\n\r\n", source)
    counted = service.counters()
    assert counted.dropped_by_peer == {("r2", "malformed"): 2, ("r3", "malformed"): 1,
                                       ("unknown", "malformed"): 1}
    assert counted.dropped["malformed"] == 4


def test_counter_lines_round_trip() -> None:
    vs = ("10.0.0.100", "tcp", 80)
    raw = {("tv4", (*vs, "original", "new")): (1, 60), ("ti4", (*vs, "10.0.1.1", 8080)): (2, 9),
           ("tn6", ("2001:db8::1", "udp", 53, "2001:db8::2", 53)): (3, 4)}
    text = "\n".join(nft.dump_lines(raw)) + "\njunk line\ntv4\ta\tb\tc\td\te\tf\tg\n"
    assert nft.parse_lines(text) == raw


def test_heartbeat_age_per_link() -> None:
    """A peer heard on its public address only: that link is fresh, its private one never
    heard (-1), the peer itself fresh."""
    from types import SimpleNamespace

    from agent.heartbeat import HeartbeatService, LocalState
    from agent.heartbeat.config import HeartbeatConfig
    from agent.heartbeat.packet import Heartbeat, Incarnation
    from agent.metrics import heartbeat as hb_metrics

    now = [100.0]
    config = HeartbeatConfig(cluster="lb1", node="r1", port=694, keepalive=0.05,
                             deadtime=0.5, freshness=5.0, local_addresses=("10.9.0.1",),
                             peers={"r2": ("10.9.0.2", "10.9.1.2")})
    service = HeartbeatService(config, b"k" * 32, lambda: LocalState("backup"),
                               clock=lambda: now[0])
    inc = Incarnation(started=2000, nonce=222)
    service.table.received(99.0, Heartbeat("lb1", "r2", inc, 1, 0.0, "backup", 0, True),
                           "10.9.0.2")
    families = {f.name: f for f in hb_metrics.collect(SimpleNamespace(heartbeat=service))}
    links = {tuple(s.labels.values()): s.value
             for s in families["lvs_heartbeat_link_age_seconds"].samples}
    assert links == {("r2", "10.9.0.2"): 1.0, ("r2", "10.9.1.2"): -1.0}
    [peer] = families["lvs_heartbeat_peer_age_seconds"].samples
    assert peer.value == 1.0


def test_past_the_cap_series_per_real_server_give_way_to_counts_per_virtual(
        monkeypatch: Any) -> None:
    """``--metrics-max-servers``: 40,000 servers are about 400,000 series; past the cap the
    agent exports per virtual service only, and says how many servers it left out."""
    import asyncio

    from prometheus_client import generate_latest

    from agent.metrics import registry_of
    from agent.pulse import AgentOptions, Pulse
    from cluster.etcd.settings import settings_from

    monkeypatch.setenv("LVS_HEARTBEAT_KEY", "k" * 32)

    async def scrape(cap: int) -> dict[str, float]:
        p = Pulse(AgentOptions(settings=settings_from("http://127.0.0.1:9"), cluster="c",
                               node="r1", metrics_max_servers=cap))
        p.config = cfg()
        p.health.configure(p.config)
        text = generate_latest(registry_of(p)).decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}

    servers = sum(len(v.servers) for v in cfg().virtuals)
    within = asyncio.run(scrape(servers))
    past = asyncio.run(scrape(servers - 1))
    assert any(k.startswith("lvs_real_server_state{") for k in within)
    assert within["lvs_metrics_servers_omitted"] == 0
    assert not any(k.startswith("lvs_real_server_") for k in past)
    assert past["lvs_metrics_servers_omitted"] == len(health_metrics.effective(cfg(), {}, {}))
    down = past['lvs_virtual_servers{state="down",virtual="web"}']
    assert down == within['lvs_virtual_servers{state="down",virtual="web"}'] == 3
    assert asyncio.run(scrape(0))["lvs_metrics_servers_omitted"] == 0  # 0: no cap
