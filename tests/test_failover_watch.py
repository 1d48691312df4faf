"""The active ARP prober's pure parts: its request frame, and how answers to probes turn
into ownership (two MACs answering one probe overlap; a stall of the prober is no gap)."""

from support.arpwatch import Event, Gap, arp_request, ownership, parse_frame

R1, R2, ME = "02:00:00:00:00:11", "02:00:00:00:00:12", "02:00:00:00:00:01"
VIP, MY_IP = "10.0.0.100", "10.0.0.50"


def probes(*times):
    return [Event(t, "probe", VIP, ME, MY_IP, True) for t in times]


def answer(mac, t):
    return Event(t, "arp-reply", VIP, mac, MY_IP)


def test_probe_frame_is_a_broadcast_request_recorded_as_a_probe():
    frame = arp_request(ME, MY_IP, VIP)
    assert len(frame) == 60 and frame[:6] == b"\xff" * 6
    assert parse_frame(frame, 1.0) == Event(1.0, "arp-request", MY_IP, ME, VIP, False)
    assert parse_frame(frame, 1.0, out=True, prober=MY_IP) == Event(
        1.0, "probe", VIP, ME, MY_IP, True)
    # someone else's request, or one we received, stays a claim of its sender
    assert parse_frame(frame, 1.0, out=False, prober=MY_IP).kind == "arp-request"
    assert parse_frame(arp_request(R1, VIP, MY_IP), 1.0, out=True, prober=MY_IP).kind == (
        "arp-request")


def test_two_macs_answering_one_probe_overlap():
    # r1 answers probe 1.00 first, r2 answers the same probe a little later: both held it
    events = [*probes(0.96, 0.98, 1.00, 1.02), answer(R1, 0.9601), answer(R1, 0.9801),
              answer(R1, 1.0001), answer(R2, 1.0002), answer(R2, 1.0202)]
    own = ownership(events, [R1, R2], hold=0.1)[VIP]
    assert len(own.overlaps) == 1
    assert own.overlaps[0].macs == (R1, R2) and own.overlaps[0].start == 1.00
    assert own.probes == 4


def test_answers_to_successive_probes_are_a_clean_hand_over():
    events = [*probes(0.98, 1.00, 1.02), answer(R1, 0.9801), answer(R1, 1.0001),
              answer(R2, 1.0201)]
    own = ownership(events, [R1, R2], hold=0.1)[VIP]
    assert own.overlaps == ()
    assert own.owners == [R1, R2]
    assert own.gaps == ()  # no probe went unanswered: no measurable gap


def test_unanswered_probes_are_a_gap_a_stalled_prober_is_not():
    answered = [*probes(0.0, 0.02), answer(R1, 0.0001), answer(R1, 0.0201)]
    # probes 0.04..0.08 unanswered, then r2 answers 0.10
    events = [*answered, *probes(0.04, 0.06, 0.08, 0.10), answer(R2, 0.1001)]
    own = ownership(events, [R1, R2], hold=0.1)[VIP]
    assert own.gaps == (Gap(0.0201, 0.10),)
    # the prober sent nothing for 0.5 s and the owner did not change
    stalled = [*answered, *probes(0.52), answer(R1, 0.5201)]
    own = ownership(stalled, [R1], hold=0.1)[VIP]
    assert own.gaps == ()
    assert own.blind == (Gap(0.02, 0.52),)
    assert [(i.start, i.end) for i in own.intervals] == [(0.0, 0.0201), (0.52, 0.5201)]


def test_a_late_answer_or_a_gratuitous_reply_keeps_its_own_time():
    garp = Event(1.0101, "arp-reply", VIP, R2, VIP)  # target = the VIP: not for us
    late = answer(R1, 1.5)  # no probe within hold before it
    own = ownership([*probes(1.0), answer(R1, 1.0001), garp, late], [R1, R2], hold=0.1)[VIP]
    assert [(i.mac, i.start) for i in own.intervals] == [(R1, 1.0), (R2, 1.0101), (R1, 1.5)]
    assert own.overlaps == ()
    assert own.owners_during(1.005, 1.02) == {R2}
    assert own.gaps_during(1.02, 1.4) == ()  # no probe was sent in between
