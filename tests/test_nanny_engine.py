"""The nanny engine with real servers on loopback: detection, reentry, diffing, bounds."""

import asyncio
import os
import socket
import time

import pytest

from agent.nanny import CheckSpec, Engine, Health, StateSpec

LO = "127.0.0.1"
WAIT = 10.0  # generous: how long to wait for something that should happen


async def until(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class Recorder:
    def __init__(self, engine):
        self.changes = []
        engine.subscribe(self.changes.append)

    def of(self, key):
        return [c for c in self.changes if c.key == key]


async def ok_server(port=0, reply=None, delay=0.0, tracker=None):
    async def handle(reader, writer):
        if tracker is not None:
            tracker["now"] += 1
            tracker["peak"] = max(tracker["peak"], tracker["now"])
        try:
            if reply is not None:
                await reader.readline()
                await asyncio.sleep(delay)
                writer.write(reply)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            if tracker is not None:
                tracker["now"] -= 1
            writer.close()

    server = await asyncio.start_server(handle, LO, port)
    return server, server.sockets[0].getsockname()[1]


async def shut(server):
    server.close()
    await server.wait_closed()


@pytest.fixture
def refused_port():
    with socket.socket() as sock:
        sock.bind((LO, 0))
        yield sock.getsockname()[1]


def tcp(port, timeout=0.1, interval=0.05, **kw):
    return CheckSpec(kind="tcp", host=LO, port=port, timeout=timeout, interval=interval, **kw)


def script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


async def test_killed_server_goes_down_at_the_next_check_and_returns_after_reentry():
    server, port = await ok_server()
    engine = Engine(seed=1)
    rec = Recorder(engine)
    reentry = 0.5
    engine.set_targets({"rs": (tcp(port), StateSpec(reentry=reentry), None)})
    async with engine:
        await until(lambda: engine.snapshot()["rs"].state == "up")
        checks_before = engine.stats().checks
        await shut(server)
        await until(lambda: engine.snapshot()["rs"].state == "down")
        # the first check after the kill took it down (one more may have been under way),
        # so it went down within one interval + timeout
        assert engine.stats().checks - checks_before <= 2
        assert engine.snapshot()["rs"].reason == "connect refused"
        server, _ = await ok_server(port)
        restarted = time.time()
        await until(lambda: engine.snapshot()["rs"].state == "up")
        await shut(server)
    states = [(c.old, c.new) for c in rec.of("rs")]
    assert states == [("unknown", "up"), ("up", "down"), ("down", "up")]
    back = rec.of("rs")[-1]
    assert back.since - restarted >= reentry  # not before `reentry` s of continuous success
    assert back.reason == f"connected (ok for {reentry:g}s)"


async def test_set_targets_diff_keeps_state_of_unchanged_and_changed_targets(refused_port):
    server, port = await ok_server()
    engine = Engine(seed=2)
    rec = Recorder(engine)
    state = StateSpec(reentry=60)
    async with engine:
        engine.set_targets({"a": (tcp(port), state, None), "b": (tcp(refused_port), state, None)})
        await until(lambda: {h.state for h in engine.snapshot().values()} == {"up", "down"})
        a_before, b_before = engine.snapshot()["a"], engine.snapshot()["b"]
        engine.set_targets({
            "a": (tcp(port, timeout=0.2), state, None),  # check changed: state kept
            "b": (tcp(refused_port), StateSpec(reentry=30), None),  # state spec changed
            "c": (tcp(port), state, None),  # new
        })
        await until(lambda: engine.snapshot()["c"].state == "up")
        checks = engine.stats().checks
        await until(lambda: engine.stats().checks >= checks + 6)  # a and b checked again
        after = engine.snapshot()
        assert (after["a"].state, after["a"].since) == ("up", a_before.since)
        assert (after["b"].state, after["b"].since) == ("down", b_before.since)
        engine.set_targets({"a": (tcp(port, timeout=0.2), state, None)})  # b and c removed
        assert set(engine.snapshot()) == {"a"}
        removed_at = len(rec.changes)
        checks = engine.stats().checks
        await until(lambda: engine.stats().checks >= checks + 4)
    await shut(server)
    assert [(c.old, c.new) for c in rec.of("a")] == [("unknown", "up")]
    assert [(c.old, c.new) for c in rec.of("b")] == [("unknown", "down")]
    assert [(c.old, c.new) for c in rec.of("c")] == [("unknown", "up")]
    assert len(rec.changes) == removed_at
    assert engine.last_result("b") is None


async def test_concurrency_is_bounded_and_queued_checks_still_run():
    tracker = {"now": 0, "peak": 0}
    server, port = await ok_server(reply=b"OK\n", delay=0.1, tracker=tracker)
    engine = Engine(max_concurrency=3, seed=3)
    spec = CheckSpec(kind="send_expect", host=LO, port=port, send=b"hi\n", expect="OK",
                     timeout=2.0, interval=0.05)
    engine.set_targets({i: (spec, StateSpec(), None) for i in range(12)})
    async with engine:
        await until(lambda: all(h.state == "up" for h in engine.snapshot().values()))
    await shut(server)
    assert engine.stats().peak_in_flight == 3
    assert tracker["peak"] <= 3


async def test_dynamic_weight_from_an_external_check(tmp_path):
    code = tmp_path / "code"
    code.write_text("0")
    prog = script(tmp_path, "misc", f'exit "$(cat {code})"\n')
    engine = Engine(seed=4)
    rec = Recorder(engine)
    spec = CheckSpec(kind="external", host=LO, argv=(prog, "%h"), weight=4, timeout=1.0,
                     interval=0.05)
    engine.set_targets({"rs": (spec, StateSpec(), None)})
    async with engine:
        await until(lambda: len(rec.changes) == 1)
        code.write_text("7")
        await until(lambda: len(rec.changes) == 2)
        code.write_text("1")
        await until(lambda: len(rec.changes) == 3)
    got = [(c.old, c.new, c.weight) for c in rec.changes]
    assert got == [("unknown", "up", 4), ("up", "up", 5), ("up", "down", 5)]
    assert rec.changes[2].reason == "exit 1"


async def test_load_monitor_scales_the_weight_down(tmp_path):
    server, port = await ok_server()
    uptime = 'echo " 10:00:00 up 1 day,  load average: 4.00, 1.00, 0.50"\n'
    loadavg = script(tmp_path, "uptime", uptime)
    engine = Engine(seed=5)
    rec = Recorder(engine)
    spec = tcp(port, weight=8, load_monitor=(loadavg, "%h"), load_interval=0.1)
    engine.set_targets({"rs": (spec, StateSpec(), None)})
    async with engine:
        await until(lambda: engine.snapshot()["rs"].weight == 2)
    await shut(server)
    assert [(c.new, c.weight) for c in rec.changes] == [("up", 8), ("up", 2)]


async def test_stop_kills_programs_still_running(tmp_path):
    pidfile = tmp_path / "pid"
    prog = script(tmp_path, "hang", f"echo $$ > {pidfile}\nexec sleep 30\n")
    engine = Engine(seed=6)
    spec = CheckSpec(kind="program", host=LO, argv=(prog,), expect="x", timeout=30,
                     interval=0.01)
    engine.set_targets({"rs": (spec, StateSpec(), None)})
    await engine.start()
    await until(lambda: pidfile.exists() and pidfile.read_text().strip())
    pid = int(pidfile.read_text())
    await engine.stop()
    assert engine.stats().in_flight == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped by the engine's stop


async def test_warm_start_initial_states(refused_port):
    server, port = await ok_server()
    engine = Engine(seed=7)
    rec = Recorder(engine)
    known = Health("down", since=1000.0, reason="seen down by the previous master", weight=1)
    engine.set_targets({
        "was-up": (tcp(port), StateSpec(), "up"),
        "was-down": (tcp(port), StateSpec(reentry=60), "down"),
        "with-history": (tcp(port), StateSpec(reentry=60), known),
    })
    async with engine:
        await until(lambda: engine.stats().checks >= 9)
    await shut(server)
    snap = engine.snapshot()
    assert (snap["was-up"].state, snap["was-down"].state) == ("up", "down")
    assert snap["with-history"].since == 1000.0
    assert snap["with-history"].reason == "seen down by the previous master"
    assert rec.changes == []


async def test_subscriber_errors_are_contained_and_unsubscribe_works():
    server, port = await ok_server()
    engine = Engine(seed=8)
    seen, muted = [], []

    def broken(change):
        raise RuntimeError("subscriber bug")

    engine.subscribe(broken)
    engine.subscribe(seen.append)
    unsubscribe = engine.subscribe(muted.append)
    unsubscribe()
    engine.set_targets({"rs": (tcp(port), StateSpec(), None)})
    async with engine:
        await until(lambda: len(seen) == 1)
    await shut(server)
    assert seen[0].new == "up"
    assert muted == []


async def test_kind_none_is_up_at_once_and_not_rechecked():
    """A server without a check is up from the moment it is a target: no check runs (40,000
    of them were 40,000 tasks and as many transitions), and none is ever due."""
    engine = Engine(seed=9)
    rec = Recorder(engine)
    engine.set_targets({"rs": (CheckSpec(kind="none", port=0, timeout=0.01), StateSpec(), None)})
    assert engine.snapshot()["rs"].state == "up"
    async with engine:
        await asyncio.sleep(0.1)
        assert engine.stats().checks == 0 and rec.changes == []
    # A target whose check becomes "none" gets that one result as a transition.
    engine = Engine(seed=9)
    rec = Recorder(engine)
    engine.set_targets({"rs": (tcp(1), StateSpec(), "down")})
    async with engine:
        engine.set_targets({"rs": (CheckSpec(kind="none", port=0, timeout=0.01), StateSpec(),
                                   None)})
        await until(lambda: bool(rec.changes) and rec.changes[-1].new == "up")


def test_set_targets_rejects_junk_clearly():
    engine = Engine()
    with pytest.raises(TypeError, match="expected \\(CheckSpec, StateSpec, initial\\)"):
        engine.set_targets({"rs": (tcp(80), None, None)})
    with pytest.raises(ValueError, match="initial state must be"):
        engine.set_targets({"rs": (tcp(80), StateSpec(), "sideways")})
    with pytest.raises(ValueError, match="max_concurrency"):
        Engine(max_concurrency=0)
    assert engine.snapshot() == {}


async def test_first_checks_of_new_targets_are_spread_over_about_a_second():
    """Piranha's default timeout makes a check every 10 s: a router that starts must still
    know its real servers within about a second, without firing every first check at once."""
    server, port = await ok_server()
    spec = CheckSpec(kind="tcp", host=LO, port=port, timeout=10.0)  # every 10 s
    assert spec.every == 10.0
    engine = Engine(seed=11)
    rec = Recorder(engine)
    engine.set_targets({i: (spec, StateSpec(), None) for i in range(200)})
    begin = time.time()  # the engine's clock: transitions carry it
    async with engine:
        await until(lambda: all(h.state == "up" for h in engine.snapshot().values()), 5)
        late = engine.stats().max_lag + 0.3  # a loaded machine runs checks late
        seen = sorted(c.since for c in rec.changes)
        assert len(seen) == 200  # one check each: the next ones are 10 s away
        assert seen[-1] - begin <= 1.0 + late and seen[-1] - seen[0] >= 0.5
        # Targets added to a running engine too, and a short interval bounds the spread.
        quick = CheckSpec(kind="tcp", host=LO, port=port, timeout=1.0, interval=0.2)
        engine.set_targets({**{i: (spec, StateSpec(), None) for i in range(200)},
                            **{f"new{i}": (spec, StateSpec(), None) for i in range(50)},
                            **{f"quick{i}": (quick, StateSpec(), None) for i in range(50)}})
        added = time.time()
        await until(lambda: all(h.state == "up" for h in engine.snapshot().values()), 5)
        news = [c.since for c in rec.changes[200:]]
        assert len(news) == 100
        assert max(news) - added <= 1.0 + engine.stats().max_lag + 0.3
    await shut(server)
