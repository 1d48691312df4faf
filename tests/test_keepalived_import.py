"""`lvsctl config import keepalived.conf`: realistic files (keepalived's own config test
accepts them) become lvs.cf that our real reader accepts and the routers can run; what
lvs.cf cannot carry is an error at FILE:LINE."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from cluster import lvscf
from cluster.keepalived import convert

DATA = Path(__file__).parent / "data" / "keepalived"
FILES = [DATA / "lb1.conf", DATA / "lb2.conf"]
LVSCTL = str(Path(sys.executable).parent / "lvsctl")
SAMPLES = Path("/usr/share/doc/keepalived/samples")


def converted(*paths: Path) -> lvscf.ParseResult:
    result = convert([(str(p), p.read_text()) for p in paths])
    assert result.errors == [] and result.text is not None
    parsed = lvscf.parse(result.text, "converted.cf", runnable=True)
    assert parsed.errors == [] and parsed.config is not None, parsed.errors
    return parsed


def test_two_routers_files_become_one_runnable_lvs_cf() -> None:
    cfg = converted(*FILES).config
    assert cfg is not None
    assert [(r.name, str(r.address), r.priority) for r in cfg.routers] == [
        ("lb1", "10.0.0.2", 150), ("lb2", "10.0.0.3", 100)]
    assert (cfg.keepalive, cfg.deadtime, cfg.heartbeat) == (1.0, 3.0, True)
    assert cfg.reservation_conflict_action == "preempt" and cfg.hold_down == 10
    assert cfg.active_cmd == "/usr/local/bin/became-master.sh"
    assert cfg.inactive_cmd == "/usr/local/bin/became-backup.sh"
    assert cfg.network == "nat"
    assert cfg.nat_router is not None and str(cfg.nat_router.ip) == "192.168.1.254"
    assert cfg.nat_router.device == "eth1:1" and str(cfg.nat_nmask) == "255.255.255.0"
    by = {v.name: v for v in cfg.virtuals}
    http = by["vs_10.0.0.100_80"]
    assert (str(http.address.ip), http.address.device, str(http.vip_nmask)) == (
        "10.0.0.100", "eth0:1", "255.255.255.0")
    assert (http.scheduler, http.persistent, http.check, http.check_path) == (
        "wlc", 50, "http", "/health")
    assert (http.interval, http.timeout, http.failures, http.reentry) == (6, 3, 4, 0)
    assert [(str(s.address), s.port, s.weight) for s in http.servers] == [
        ("192.168.1.11", 8080, 1), ("192.168.1.12", 8080, 2)]
    https = by["vs_10.0.0.100_443"]
    assert (https.check, https.scheduler, https.failures) == ("https", "rr", 2)
    assert str(https.check_status).replace(" ", "") in ("200-299,301",)
    smtp = by["vs_10.0.0.101_25"]
    assert (smtp.check, smtp.check_port, smtp.quiesce_server) == ("tcp", 25, True)
    assert str(smtp.sorry_server) == "192.168.1.30" and smtp.address.device == "eth0:2"
    dns = by["vs_10.0.0.101_53"]
    assert (dns.protocol, dns.scheduler, dns.scheduler_flags) == ("udp", "mh", "mh-port")
    assert (dns.check, dns.check_program, dns.timeout, dns.failures) == (
        "external", "/usr/local/bin/check-dns %h %p", 3, 1)


@pytest.mark.netns
def test_the_test_files_are_real_keepalived_configs(tmp_path: Path) -> None:
    """keepalived's own config test (-t) accepts them, in a namespace with eth0 and eth1."""
    if shutil.which("keepalived") is None:
        pytest.skip("keepalived not installed")
    ns = f"kaimp-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name",
                        "eth1"], check=True)
        for path in FILES:
            res = subprocess.run(["ip", "netns", "exec", ns, "keepalived", "-t", "-f",
                                  str(path)], capture_output=True, text=True, timeout=30)
            assert res.returncode == 0, res.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_one_file_makes_its_peers_lower_routers_with_a_warning() -> None:
    result = convert([(str(FILES[0]), FILES[0].read_text())])
    assert result.text is not None
    cfg = lvscf.parse(result.text, "c.cf", runnable=True).config
    assert cfg is not None
    assert [(r.name, r.priority) for r in cfg.routers] == [("lb1", 150), ("r2", 149)]
    assert any("peer 10.0.0.3 has no file of its own" in w for w in result.warnings)


def errors_of(text: str) -> list[str]:
    result = convert([("k.conf", textwrap.dedent(text))])
    assert result.text is None
    return result.errors


BASE = """\
vrrp_instance VI_1 {
    interface eth0
    priority 100
    unicast_src_ip 10.0.0.2
    virtual_ipaddress {
        10.0.0.100/24
    }
}
virtual_server 10.0.0.100 80 {
    lb_algo rr
    real_server 10.0.1.1 80 {
        TCP_CHECK {
            connect_timeout 3
        }
    }
"""


def test_a_minimal_file_converts() -> None:
    result = convert([("k.conf", BASE + "}\n")])
    assert result.errors == [] and result.text is not None
    cfg = lvscf.parse(result.text, "c.cf", runnable=True).config
    assert cfg is not None and cfg.virtuals[0].address.device == "eth0"
    assert str(cfg.virtuals[0].vip_nmask) == "255.255.255.0"


@pytest.mark.parametrize(("extra", "expected"), [
    ("    frobnicate 3\n}\n", "k.conf:16: unknown keyword 'frobnicate' in virtual_server"),
    ("    quorum 2\n}\n", "k.conf:16: 'quorum' (virtual_server) is not supported"),
    ("    lb_kind FULLNAT\n}\n", "k.conf:16: lb_kind FULLNAT: NAT, DR or TUN (ipip) only"),
    ("    lb_algo fastest\n}\n", "k.conf:16: scheduler 'fastest' is not supported"),
    ("    real_server 10.0.1.2 80 {\n        SMTP_CHECK {\n        }\n    }\n}\n",
     "k.conf:17: 'SMTP_CHECK' (real_server) is not supported"),
    ("    real_server 10.0.1.2 80 {\n        TCP_CHECK {\n            connect_timeout 9\n"
     "        }\n    }\n}\n",
     "k.conf:16: real_server 10.0.1.2: its check differs from k.conf:11's (timeout)"),
    ("    real_server 10.0.1.2 80 {\n        HTTP_GET {\n            url {\n"
     "                digest 9b3a0c85a887a256d6939da88aabd8cd\n            }\n        }\n"
     "    }\n}\n", "k.conf:19: 'digest' (url) is not supported"),
    ("    real_server 10.0.1.2 80 {\n        notify_up /bin/true\n    }\n}\n",
     "k.conf:17: 'notify_up' (real_server) is not supported"),
    ("}\nvirtual_server 10.0.0.200 80 {\n    real_server 10.0.1.1 80 {\n    }\n}\n",
     "k.conf:17: virtual_server 10.0.0.200 80: its address is in no vrrp_instance's "
     "virtual_ipaddress"),
    ("}\nvrrp_script chk {\n    script /bin/true\n}\n",
     "k.conf:17: 'vrrp_script' (the top level) is not supported"),
    ("}\ninclude /etc/keepalived/other.conf\n", "k.conf:17: 'include' (the top level) is "
     "not supported"),
    ("    real_server web.example.com 80 {\n    }\n}\n", "k.conf:16: 'real_server': not an "
     "IP address: 'web.example.com' (hostnames are not resolved)"),
    ("", "k.conf:9: block opened here is never closed (missing '}')"),
    ("}\n}\n", "k.conf:17: '}' without a block to close"),
])
def test_errors_name_file_and_line(extra: str, expected: str) -> None:
    errors = errors_of(BASE + extra)
    assert any(e.startswith(expected) for e in errors), errors


def test_vrrp_errors_name_file_and_line() -> None:
    errors = errors_of("""\
        vrrp_instance VI_1 {
            interface eth0
            priority 100
            track_script {
                chk
            }
            virtual_ipaddress {
                10.0.0.100/24 dev eth0 frob x
            }
        }
        """)
    assert errors[0].startswith("k.conf:1: vrrp_instance VI_1: no unicast_src_ip")
    assert errors[1].startswith("k.conf:4: 'track_script' (vrrp_instance) is not supported")
    assert errors[2] == "k.conf:8: virtual_ipaddress: unknown option 'frob'"


def test_files_that_disagree_are_an_error() -> None:
    other = FILES[1].read_text().replace("lb_algo rr", "lb_algo wrr")
    result = convert([(str(FILES[0]), FILES[0].read_text()), ("lb2.conf", other)])
    assert result.text is None
    assert any(e.startswith("lb2.conf:") and "differs from" in e for e in result.errors)


def test_every_debian_sample_converts_or_says_why() -> None:
    """keepalived's own samples: each gives valid lvs.cf or FILE:LINE errors, never a crash."""
    if not SAMPLES.is_dir():
        pytest.skip("keepalived's samples not installed")
    samples = sorted(p for p in SAMPLES.iterdir() if p.name.startswith("keepalived.conf"))
    assert samples
    for path in samples:
        result = convert([(path.name, path.read_text(errors="replace"))])
        if result.text is not None:
            assert lvscf.parse(result.text, "c.cf", runnable=True).errors == [], path
        else:
            assert result.errors
            assert all(e.startswith(f"{path.name}:") or e.startswith("<converted")
                       for e in result.errors), result.errors


def test_lvsctl_config_import(tmp_path: Path) -> None:
    out = tmp_path / "lvs.cf"
    res = subprocess.run([LVSCTL, "config", "import", *map(str, FILES), "-w", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "warning: 'state' (vrrp_instance) ignored" in res.stderr
    res = subprocess.run([LVSCTL, "config", "validate", str(out)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "2 routers, 4 virtual services" in res.stdout, res.stderr
    res = subprocess.run([LVSCTL, "config", "import", *map(str, FILES), "-o", "json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["virtuals"]) == 4
    bad = tmp_path / "bad.conf"
    bad.write_text(BASE + "    quorum 2\n}\n")
    res = subprocess.run([LVSCTL, "config", "import", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 1 and res.stdout == ""
    assert f"{bad}:16: 'quorum' (virtual_server) is not supported" in res.stderr
    assert "lvsctl: 1 error: no lvs.cf written" in res.stderr


def test_multicast_vrrp_needs_the_address_on_the_command_line() -> None:
    multicast = BASE.replace("    unicast_src_ip 10.0.0.2\n", "") + "}\n"
    assert "no unicast_src_ip" in errors_of(multicast)[0]
    result = convert([("k.conf", multicast)], addresses=["10.0.0.7"])
    assert result.errors == [] and result.text is not None
    cfg = lvscf.parse(result.text, "c.cf", runnable=True).config
    assert cfg is not None and [str(r.address) for r in cfg.routers] == ["10.0.0.7"]
    bad = convert([("k.conf", multicast)], addresses=["lb1.example.com"])
    assert bad.text is None and "--address 'lb1.example.com': not an IP" in bad.errors[0]
