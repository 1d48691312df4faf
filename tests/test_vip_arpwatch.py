"""arpwatch's pure analysis: ownership intervals, double owners and gaps per VIP."""

import json

from support.arpwatch import Event, Gap, Interval, Overlap, ownership, read_events

R1, R2, CLIENT = "02:00:00:00:00:11", "02:00:00:00:00:12", "02:00:00:00:00:01"
VIP = "10.0.0.100"


def claims(mac, *times, ip=VIP, kind="ip4"):
    return [Event(t, kind, ip, mac) for t in times]


def test_clean_failover_has_one_owner_at_a_time_and_a_gap():
    events = claims(R1, 0.0, 0.1, 0.2, 0.3) + claims(R2, 2.0, 2.1, kind="arp-reply")
    own = ownership(events, [R1, R2])[VIP]
    assert own.intervals == (Interval(R1, 0.0, 0.3, 4), Interval(R2, 2.0, 2.1, 2))
    assert own.overlaps == ()
    assert own.gaps == (Gap(0.3, 2.0),)
    assert own.gaps[0].duration == 1.7
    assert own.owners == [R1, R2]
    assert own.owners_at(0.25) == {R1}
    assert own.owners_at(1.0) == set()


def test_interleaved_claims_are_two_owners():
    # r2 takes over at 1.0 but r1 still answers at 1.05 and 1.1
    events = claims(R1, 0.0, 0.5, 1.05, 1.1) + claims(R2, 1.0, 1.2, kind="na")
    own = ownership(events, [R1, R2])[VIP]
    assert own.overlaps == (Overlap((R1, R2), 1.0, 1.1),)
    assert own.owners_at(1.07) == {R1, R2}
    assert own.gaps == ()


def test_claims_further_apart_than_hold_split_intervals():
    events = claims(R1, 0.0, 0.5, 3.0)
    assert ownership(events, [R1], hold=1.0)[VIP].intervals == (
        Interval(R1, 0.0, 0.5, 2),
        Interval(R1, 3.0, 3.0, 1),
    )
    assert ownership(events, [R1], hold=1.0)[VIP].gaps == (Gap(0.5, 3.0),)
    assert ownership(events, [R1], hold=5.0)[VIP].intervals == (Interval(R1, 0.0, 3.0, 3),)


def test_flapping_back_and_forth():
    events = claims(R1, 0, 1) + claims(R2, 2, 3) + claims(R1, 4, 5)
    own = ownership(events, [R1, R2], hold=1.5)[VIP]
    assert own.owners == [R1, R2, R1]
    assert own.overlaps == ()
    assert own.gaps == (Gap(1, 2), Gap(3, 4))


def test_overlap_found_past_a_long_interval():
    # a long r1 interval overlaps a short r2 one that starts after another r1-free stretch
    events = claims(R1, *[i * 0.5 for i in range(21)]) + claims(R2, 3.0) + claims(R2, 8.0)
    own = ownership(events, [R1, R2])[VIP]
    assert own.overlaps == (Overlap((R1, R2), 3.0, 3.0), Overlap((R1, R2), 8.0, 8.0))


def test_vips_are_separate_and_others_ignored():
    events = (
        claims(R1, 0, 1)
        + claims(R2, 0.5, ip="10.0.0.101")
        + claims(CLIENT, 0.7, ip="10.0.0.1", kind="arp-request")  # the client's own address
        + [Event(0.8, "weird", VIP, R2)]  # not a claim kind
    )
    result = ownership(events, [R1, R2])
    assert set(result) == {VIP, "10.0.0.101"}
    assert result[VIP].overlaps == ()
    assert result["10.0.0.101"].intervals == (Interval(R2, 0.5, 0.5, 1),)


def test_foreign_claims_of_a_vip_are_reported():
    events = claims(R1, 0, 1) + claims(CLIENT, 0.5, kind="arp-reply")
    own = ownership(events, [R1.upper()])[VIP]
    assert own.foreign == (Event(0.5, "arp-reply", VIP, CLIENT),)
    assert own.intervals == (Interval(R1, 0, 1, 2),)


def test_explicit_vips_include_unclaimed_ones():
    result = ownership(claims(R1, 0), [R1], vips=[VIP, "fd00::100"])
    assert result["fd00::100"].intervals == ()
    assert result["fd00::100"].gaps == ()
    assert ownership([], [R1]) == {}


def test_read_events_sorts_and_skips_junk(tmp_path):
    path = tmp_path / "watch.jsonl"
    rows = [
        {"t": 2.0, "kind": "na", "ip": "fd00::1", "mac": R2},
        "not json",
        {"t": 1.0, "kind": "arp-reply", "ip": VIP, "mac": R1, "target": VIP, "out": False},
        {"unexpected": 1},
    ]
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    events = read_events(path)
    assert [e.t for e in events] == [1.0, 2.0]
    assert events[0] == Event(1.0, "arp-reply", VIP, R1, VIP, False)
