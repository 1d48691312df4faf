"""Heartbeat wire format and acceptance rules: pure, no sockets."""

import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.heartbeat import (
    MAX_PACKET,
    Ack,
    Heartbeat,
    Incarnation,
    PacketTooLarge,
    Rejected,
    Verifier,
    decode,
    encode,
)

KEY = b"0123456789abcdef0123456789abcdef"
WALL = 1_800_000_000.0  # a fixed "now" on the wall clock
INC = Incarnation(started=int(WALL * 1000) - 5000, nonce=0xDEADBEEF12345678)


def hb(**kw) -> Heartbeat:
    base = dict(
        cluster="lb1",
        node="r2",
        incarnation=INC,
        seq=1,
        timestamp=WALL,
        role="backup",
        term=7,
        etcd_ok=True,
        acks={"r1": Ack(nonce=42, seq=99), "r3": Ack(nonce=2**64 - 1, seq=1)},
    )
    base.update(kw)
    return Heartbeat(**base)


def sign(body: bytes, key: bytes = KEY, head: bytes = b"PHB\x01") -> bytes:
    return head + body + hmac.digest(key, head + body, hashlib.sha256)


def body_of(h: Heartbeat) -> dict:
    return json.loads(encode(h, KEY)[4:-32])


def verifier(freshness: float = 5.0) -> Verifier:
    return Verifier("lb1", "r1", ["r1", "r2", "r3"], KEY, freshness)


def reason(fn, *args) -> str:
    with pytest.raises(Rejected) as e:
        fn(*args)
    return e.value.reason


# --- codec --------------------------------------------------------------------------------


def test_round_trip_keeps_every_field():
    h = hb(role="active", term=2**64 - 1, etcd_ok=False, timestamp=WALL + 0.123456)
    data = encode(h, KEY)
    assert decode(data, KEY) == h
    assert data.startswith(b"PHB\x01") and len(data) < 400


def test_round_trip_unicode_names():
    h = hb(cluster="lb-ü", node="r2", acks={"röuter": Ack(1, 2)})
    assert decode(encode(h, KEY), KEY) == h


def test_wrong_key_is_bad_mac():
    assert reason(decode, encode(hb(), KEY), b"another key of 32 bytes........") == "bad_mac"


@pytest.mark.parametrize("index", [0, 3, 10, -40, -1])
def test_any_flipped_byte_is_rejected(index):
    data = bytearray(encode(hb(), KEY))
    data[index] ^= 0x01
    assert reason(decode, bytes(data), KEY) in {"bad_mac", "malformed"}


def test_flipped_body_byte_is_bad_mac():
    data = bytearray(encode(hb(), KEY))
    data[20] ^= 0x01
    assert reason(decode, bytes(data), KEY) == "bad_mac"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"PHB",
        b"PHB\x01{}",  # too short for a MAC
        b"XYZ\x01" + b"{}" * 40,  # not our magic
        sign(b"{}", head=b"PHB\x02"),  # a future version
    ],
)
def test_garbage_is_malformed(data):
    assert reason(decode, data, KEY) == "malformed"


def test_oversize_is_malformed_even_if_signed():
    h = hb()
    body = body_of(h)
    body["pad"] = "x" * MAX_PACKET
    assert reason(decode, sign(json.dumps(body).encode()), KEY) == "malformed"


def test_encode_refuses_oversize():
    acks = {f"peer-with-a-rather-long-name-{i:03}": Ack(2**64 - 1, 2**64 - 1) for i in range(40)}
    with pytest.raises(PacketTooLarge):
        encode(hb(acks=acks), KEY)


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 0},
        {"seq": -1},
        {"seq": True},
        {"seq": 2**64},
        {"seq": "5"},
        {"ts": "now"},
        {"ts": -1},
        {"role": "master"},
        {"term": 1.5},
        {"etcd": 1},
        {"inc": [1]},
        {"inc": [1, -2]},
        {"acks": []},
        {"acks": {"r1": [1]}},
        {"acks": {"": [1, 2]}},
        {"node": ""},
        {"node": "x" * 65},
        {"cluster": 5},
        {"node": " r2"},
    ],
)
def test_signed_but_invalid_body_is_malformed(change):
    body = body_of(hb()) | change
    assert reason(decode, sign(json.dumps(body).encode()), KEY) == "malformed"


@pytest.mark.parametrize("field", ["cluster", "node", "inc", "seq", "ts", "role", "term", "acks"])
def test_missing_field_is_malformed(field):
    body = body_of(hb())
    del body[field]
    assert reason(decode, sign(json.dumps(body).encode()), KEY) == "malformed"


def test_signed_non_json_is_malformed():
    assert reason(decode, sign(b"\xff\xfe not json"), KEY) == "malformed"
    assert reason(decode, sign(b"[1, 2, 3]"), KEY) == "malformed"


def test_unknown_fields_are_ignored():
    body = body_of(hb()) | {"future": {"x": 1}}
    assert decode(sign(json.dumps(body).encode()), KEY) == hb()


def test_encode_refuses_bad_values():
    for bad in [hb(role="master"), hb(seq=-1), hb(node=""), hb(timestamp=float("nan"))]:
        with pytest.raises(ValueError):
            encode(bad, KEY)


@given(st.binary(max_size=MAX_PACKET + 10))
def test_random_bytes_only_ever_rejected(data):
    with pytest.raises(Rejected):
        decode(data, KEY)


@given(st.binary(min_size=2, max_size=300))
def test_signed_random_body_is_rejected_or_valid(body):
    try:
        h = decode(sign(body), KEY)
    except Rejected as e:
        assert e.reason == "malformed"
    else:
        assert isinstance(h, Heartbeat)


# --- verifier: cluster, sender, freshness, replay -----------------------------------------


def test_verifier_accepts_a_valid_packet():
    assert verifier().verify(encode(hb(), KEY), now=0.0, wall=WALL) == hb()


def test_wrong_cluster():
    assert reason(verifier().verify, encode(hb(cluster="lb2"), KEY), 0.0, WALL) == "wrong_cluster"


@pytest.mark.parametrize("node", ["r9", "r1"])  # a stranger, and our own name reflected back
def test_unknown_sender(node):
    assert reason(verifier().verify, encode(hb(node=node), KEY), 0.0, WALL) == "unknown_sender"


@pytest.mark.parametrize("offset", [-5.01, 5.01, -3600, 1e9])
def test_stale_timestamp(offset):
    data = encode(hb(timestamp=WALL + offset), KEY)
    assert reason(verifier(freshness=5.0).verify, data, 0.0, WALL) == "stale"


@pytest.mark.parametrize("offset", [-4.99, 4.99])
def test_timestamp_inside_window(offset):
    assert verifier(freshness=5.0).verify(encode(hb(timestamp=WALL + offset), KEY), 0.0, WALL)


def test_replay_of_same_packet():
    v = verifier()
    data = encode(hb(seq=10), KEY)
    v.verify(data, 0.0, WALL)
    assert reason(v.verify, data, 0.1, WALL) == "replay"


def test_reordered_packets_accepted_once_each():
    v = verifier()
    for seq in [10, 12, 11, 9]:  # e.g. two links with different delays
        v.verify(encode(hb(seq=seq), KEY), 0.0, WALL)
    for seq in [9, 10, 11, 12]:
        assert reason(v.verify, encode(hb(seq=seq), KEY), 0.0, WALL) == "replay"


def test_sequence_far_behind_is_replay():
    v = verifier()
    v.verify(encode(hb(seq=100), KEY), 0.0, WALL)
    assert reason(v.verify, encode(hb(seq=36), KEY), 0.0, WALL) == "replay"
    v.verify(encode(hb(seq=37), KEY), 0.0, WALL)  # inside the 64-packet window, unseen


def test_restart_with_newer_incarnation_resets_seq():
    v = verifier()
    v.verify(encode(hb(seq=500), KEY), 0.0, WALL)
    newer = Incarnation(started=INC.started + 2000, nonce=1)
    assert v.verify(encode(hb(incarnation=newer, seq=1), KEY), 1.0, WALL).seq == 1


def test_replay_of_old_incarnation_after_restart():
    v = verifier(freshness=5.0)
    captured = encode(hb(seq=500), KEY)  # recorded before r2 restarted
    v.verify(captured, 0.0, WALL)
    newer = Incarnation(started=INC.started + 2000, nonce=1)
    v.verify(encode(hb(incarnation=newer, seq=1), KEY), 1.0, WALL + 1)
    old_unseen = encode(hb(seq=501, timestamp=WALL + 1), KEY)  # fresh, but old run
    assert reason(v.verify, old_unseen, 1.5, WALL + 1) == "replay"
    assert reason(v.verify, captured, 1.5, WALL + 1) == "replay"


def test_older_incarnation_accepted_after_long_silence():
    # A peer whose clock stepped back restarts with an "older" incarnation: it comes back
    # once the known incarnation has been silent for 2 x freshness.
    v = verifier(freshness=5.0)
    v.verify(encode(hb(seq=500), KEY), 0.0, WALL)
    older = Incarnation(started=INC.started - 60_000, nonce=3)
    data = encode(hb(incarnation=older, seq=1, timestamp=WALL + 20), KEY)
    assert reason(v.verify, data, 9.0, WALL + 20) == "replay"
    assert v.verify(encode(hb(incarnation=older, seq=2, timestamp=WALL + 20), KEY), 10.5, WALL + 20)


def test_rejected_packets_do_not_advance_replay_state():
    v = verifier()
    v.verify(encode(hb(seq=5), KEY), 0.0, WALL)
    stale_future = encode(hb(seq=1000, timestamp=WALL + 60), KEY)
    assert reason(v.verify, stale_future, 0.0, WALL) == "stale"
    assert v.verify(encode(hb(seq=6), KEY), 0.0, WALL).seq == 6  # still inside the window
