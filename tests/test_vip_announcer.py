"""The announcement runner: first round at once, schedule followed, cancel stops at once."""

import asyncio

from support.netlab import wait_for

from agent.vip import AnnounceConfig, Announcer, Vip

A = Vip("10.0.0.100", 24, "eth0")
B = Vip("fd00::100", 64, "eth0")


class Recorder:
    def __init__(self):
        self.rounds = []

    def __call__(self, vips):
        self.rounds.append((asyncio.get_running_loop().time(), vips))


async def test_first_round_is_sent_synchronously_then_the_rest():
    rec = Recorder()
    ann = Announcer(rec, AnnounceConfig(count=3, interval=0.01, second_delay=0.1, second_count=2))
    ann.start([A, B])
    assert len(rec.rounds) == 1  # before yielding to the loop
    assert rec.rounds[0][1] == frozenset({A, B})
    await wait_for(lambda: not ann.running, within=10, what="schedule end")
    assert len(rec.rounds) == 5
    times = [t for t, _ in rec.rounds]
    assert times == sorted(times)
    assert times[3] - times[0] >= 0.1  # the second burst waited for its delay


async def test_cancel_stops_immediately_and_restart_replaces():
    rec = Recorder()
    ann = Announcer(rec, AnnounceConfig(count=1000, interval=0.001, second_delay=None))
    ann.start([A])
    await wait_for(lambda: len(rec.rounds) >= 3, what="a few rounds")
    ann.cancel()
    sent = len(rec.rounds)
    await asyncio.sleep(0.05)
    assert len(rec.rounds) == sent
    assert not ann.running
    ann.start([B])
    ann.start([A])  # replaces the schedule for B
    await asyncio.sleep(0.02)
    await ann.stop()
    assert {vips for _, vips in rec.rounds[sent:]} == {frozenset({B}), frozenset({A})}
    assert rec.rounds[sent + 1 :] and all(v == {A} for _, v in rec.rounds[sent + 1 :])


async def test_periodic_refresh_keeps_going_and_errors_do_not_stop_it():
    calls = []

    def flaky(vips):
        calls.append(vips)
        if len(calls) % 2:
            raise RuntimeError("boom")

    ann = Announcer(flaky, AnnounceConfig(count=1, second_delay=None, refresh=0.01))
    ann.start([A])
    await wait_for(lambda: len(calls) >= 6, what="refresh rounds")
    assert ann.running
    await ann.stop()
    assert not ann.running


async def test_empty_set_sends_nothing():
    rec = Recorder()
    ann = Announcer(rec, AnnounceConfig())
    ann.start([])
    assert rec.rounds == []
    assert not ann.running
    await ann.stop()
