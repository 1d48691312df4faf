"""Pure parts of agent.vip: VIP validation, lifetimes, the announcement schedule."""

import itertools

import pytest

from agent.vip import AnnounceConfig, Vip, VipError, offsets, vips_of
from agent.vip.fence import license_script, setup_script
from agent.vip.model import check_lifetime
from cluster.timing import Timing


def test_vip_is_canonical_and_hashable():
    a = Vip("FD00:0:0::0100", 64, "eth0")
    assert a.ip == "fd00::100"
    assert a.version == 6
    assert a == Vip("fd00::100", 64, "eth0")
    assert len({a, Vip("fd00::100", 64, "eth0")}) == 1
    v4 = Vip.of(("192.168.1.100", 24, "eth0", "eth0:1"))
    assert (v4.ip, v4.prefixlen, v4.interface, v4.label, v4.version) == (
        "192.168.1.100", 24, "eth0", "eth0:1", 4,
    )  # fmt: skip
    assert str(v4) == "192.168.1.100/24 dev eth0 (eth0:1)"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("300.1.1.1", 24, "eth0"), "not an IPv4 or IPv6"),
        (("10.0.0.1", 33, "eth0"), "not in 1..32"),
        (("10.0.0.1", "24", "eth0"), "must be an integer"),
        (("10.0.0.1", True, "eth0"), "must be an integer"),
        (("fd00::1", 129, "eth0"), "not in 1..128"),
        (("10.0.0.1", 24, ""), "non-empty"),
        (("10.0.0.1", 24, "a-very-long-interface"), "max 15"),
        (("10.0.0.1", 24, "eth0", "eth1:1"), "must start with the interface"),
        (("fd00::1", 64, "eth0", "eth0:1"), "IPv6 addresses take no label"),
        (("224.0.0.1", 24, "eth0"), "unicast"),
        (("::", 64, "eth0"), "unicast"),
    ],
)
def test_bad_vips_get_clear_errors(args, words):
    with pytest.raises(VipError, match=words):
        Vip(*args)


def test_vips_of_rejects_junk_and_duplicate_addresses():
    assert vips_of([("10.0.0.1", 24, "eth0"), Vip("10.0.0.1", 24, "eth0")]) == {
        Vip("10.0.0.1", 24, "eth0")
    }
    with pytest.raises(VipError, match="given twice"):
        vips_of([("10.0.0.1", 24, "eth0"), ("10.0.0.1", 32, "eth1")])
    with pytest.raises(VipError, match="must be"):
        vips_of(["10.0.0.1/24"])


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, 2**32 - 1])
def test_lifetime_must_be_whole_positive_seconds(bad):
    with pytest.raises(VipError):
        check_lifetime(bad)
    assert check_lifetime(2) == 2


def test_vip_lifetime_arithmetic_lives_in_timing():
    t = Timing()
    assert t.vip_survival == t.vip_lifetime + t.kernel_slack == 2.0
    assert t.vip_renew_every == 0.25
    assert t.lifetime_covered  # 2 s <= ack window 2 + margin 0.25
    assert not Timing(vip_lifetime=2).lifetime_covered


def test_fence_scripts_guard_every_vip_and_license_with_a_timeout():
    v4, v6 = Vip("10.0.0.100", 24, "eth0"), Vip("fd00::100", 64, "eth0")
    setup = setup_script([v4, v6])
    assert "add element arp piranha_fence guarded { 10.0.0.100 }" in setup
    assert "add element ip6 piranha_fence guarded { fd00::100 }" in setup
    assert "arp saddr ip @guarded arp saddr ip != @licensed drop" in setup
    lic = license_script([v4, v6], 1.2345)
    assert "flush set arp piranha_fence licensed" in lic  # exactly these, nothing older
    assert "licensed { 10.0.0.100 timeout 1234ms }" in lic
    assert "licensed { fd00::100 timeout 1234ms }" in lic
    assert "add element" not in license_script([v4], 0.0009)  # under 1 ms: license none
    assert "add element" not in license_script([v4], -1)


def test_default_schedule_two_bursts_first_at_once():
    times = list(offsets(AnnounceConfig()))
    assert times == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 5.0, 5.2, 5.4, 5.6, 5.8])


def test_schedule_options():
    assert list(offsets(AnnounceConfig(count=1, second_delay=None))) == [0]
    cfg = AnnounceConfig(count=2, interval=0.5, second_delay=3, second_count=1, refresh=10)
    assert list(itertools.islice(offsets(cfg), 5)) == pytest.approx([0, 0.5, 3, 13, 23])
    # a second burst due before the first ends starts when the first one ends
    assert list(offsets(AnnounceConfig(count=3, interval=1, second_delay=0.5))) == [
        0, 1, 2, 2, 3, 4,
    ]  # fmt: skip
    times = list(itertools.islice(offsets(AnnounceConfig(refresh=1.5)), 30))
    assert times == sorted(times)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": 0},
        {"count": 1.5},
        {"interval": -1},
        {"interval": float("nan")},
        {"second_delay": 0},
        {"second_count": 0},
        {"refresh": 0},
        {"refresh": float("inf")},
        {"refresh": "5"},
    ],
)
def test_bad_schedule_rejected(kwargs):
    with pytest.raises(VipError):
        AnnounceConfig(**kwargs)
