"""HeartbeatConfig validation and load_secret."""

import os

import pytest

from agent.heartbeat import ConfigError, HeartbeatConfig, load_secret


def config(**kw) -> HeartbeatConfig:
    base = dict(
        cluster="lb1",
        node="r1",
        keepalive=0.5,
        deadtime=2.0,
        local_addresses=("192.0.2.1", "10.0.0.1"),
        peers={"r2": ("192.0.2.2", "10.0.0.2")},
    )
    base.update(kw)
    return HeartbeatConfig(**base)


def test_defaults_and_normalisation():
    c = config(local_addresses=["2001:DB8::1"], peers={"r2": ["2001:db8:0::2"]})
    assert c.port == 539 and c.freshness == 10.0
    assert c.local_addresses == ("2001:db8::1",)
    assert c.peers["r2"] == ("2001:db8::2",)
    with pytest.raises(TypeError):
        c.peers["r3"] = ("2001:db8::3",)  # frozen all the way down


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"keepalive": 0}, "keepalive"),
        ({"keepalive": "fast"}, "keepalive"),
        ({"deadtime": 0.4}, "longer than keepalive"),
        ({"freshness": -1}, "freshness"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"local_addresses": ()}, "no local address"),
        ({"local_addresses": ("0.0.0.0",)}, "unicast"),
        ({"local_addresses": "192.0.2.1"}, "not a string"),
        ({"local_addresses": ("192.0.2.1", "192.0.2.1")}, "duplicate"),
        ({"peers": {"r2": ("not-an-ip",)}}, "not an IP address"),
        ({"peers": {"r2": ()}}, "no address"),
        ({"peers": {"r2": "192.0.2.2"}}, "sequence of addresses"),
        ({"peers": {"r1": ("192.0.2.2",)}}, "its own peers"),
        ({"peers": {"r2": ("192.0.2.1",)}}, "one of our own"),
        ({"peers": {"r2": ("2001:db8::2",)}}, "no local IPv6"),
        ({"peers": {"r2": ("fe80::2",)}}, "link-local"),
        ({"node": ""}, "node name"),
        ({"cluster": "x" * 65}, "cluster name"),
        ({"peers": {f"router-{i:03}-{'x' * 40}": (f"10.1.0.{i}",) for i in range(30)}}, "limit"),
    ],
)
def test_bad_config_is_a_clear_error(change, words):
    with pytest.raises(ConfigError, match=words):
        config(**change)


def test_secret_from_file(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(b"  0123456789abcdef0123\n")
    path.chmod(0o600)
    assert load_secret(str(path)) == b"0123456789abcdef0123"


def test_secret_from_env(monkeypatch):
    monkeypatch.setenv("HB_TEST_KEY", "abcdefghijklmnopqrstuvwxyz")
    assert load_secret(None, env="HB_TEST_KEY") == b"abcdefghijklmnopqrstuvwxyz"


def test_missing_or_short_secret(tmp_path, monkeypatch):
    monkeypatch.delenv("HB_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="HB_TEST_KEY"):
        load_secret(None, env="HB_TEST_KEY")
    with pytest.raises(ConfigError, match="cannot read"):
        load_secret(str(tmp_path / "absent"))
    short = tmp_path / "short"
    short.write_text("tooshort\n")
    with pytest.raises(ConfigError, match="at least 16"):
        load_secret(str(short))
    monkeypatch.setenv("HB_TEST_KEY", "   ")
    with pytest.raises(ConfigError, match="0 bytes"):
        load_secret(None, env="HB_TEST_KEY")


def test_world_readable_key_file_still_loads_with_warning(tmp_path, caplog):
    path = tmp_path / "key"
    path.write_text("0123456789abcdef0123")
    os.chmod(path, 0o644)
    assert load_secret(str(path)) == b"0123456789abcdef0123"
    assert "chmod 600" in caplog.text
