"""The lab load-balances for real: weights, health checks, drain, quiesce, sorry server,
drift repair, and a failover that keeps the shared health view (issue 5, end to end).

One lab for the module (3 routers, 3 real hosts: rs1 and rs2 serve, rs3 is the sorry
server). Tests run in file order and each leaves the lab as it found it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cluster import lvscf
from lvslab import Lab
from lvslab.config_file import lab_lvs_cf
from lvslab.topology import Topology

pytestmark = pytest.mark.netns

BIN = Path(sys.executable).parent
LVSCTL = str(BIN / "lvsctl")
PY = sys.executable
CLIENT = str(Path(__file__).parent / "support" / "lbclient.py")
CHECK = 1.0  # check interval = timeout (Piranha's `timeout`)
REENTRY = 2.0


def config_text(topo: Topology, serial: int, **virtual: object) -> str:
    cfg = lvscf.parse(lab_lvs_cf(topo), "lab.cf").config
    assert cfg is not None
    v = cfg.virtuals[0]
    weights = {"rs1": 3, "rs2": 1}
    servers = tuple(s.model_copy(update={"weight": weights[s.name]})
                    for s in v.servers if s.name in weights)
    rs3 = next(s for s in v.servers if s.name == "rs3")
    v = v.model_copy(update={"servers": servers, "timeout": CHECK, "reentry": REENTRY,
                             "sorry_server": rs3.address, "scheduler": "wrr", **virtual})
    text = lvscf.write(cfg.model_copy(update={"virtuals": (v,), "serial_no": serial}))
    assert lvscf.parse(text).config is not None, lvscf.parse(text).errors
    return text


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    n = os.getpid() % 100
    topo = Topology(f"lb{n}", f"10.{120 + n % 50}.0.0/24", f"10.{120 + n % 50}.1.0/24",
                    routers=3, servers=3)
    path = tmp_path_factory.mktemp("lb") / "lvs.cf"
    path.write_text(config_text(topo, 1))
    with Lab(topo.prefix, topo.public, topo.private, routers=3, servers=3,
             config=path) as lab:
        lab.topo = topo  # type: ignore[attr-defined]
        lab.tmp = path.parent  # type: ignore[attr-defined]
        wait_for(lambda: active(lab) is not None, 20, "an active router")
        wait_for(lambda: states(lab) == {"rs1": "up", "rs2": "up"}, 20, "both servers up")
        yield lab


def wait_for(cond: Callable[[], object], limit: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if cond():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out after {limit}s waiting for {what}")


def ctl(lab: Lab, *args: str) -> str:
    res = lab.exec("client", LVSCTL, "--etcd", lab.etcd_url, *args)
    assert res.returncode == 0, res.stderr
    return res.stdout


def status(lab: Lab) -> dict:
    return json.loads(ctl(lab, "status", "-o", "json"))


def states(lab: Lab) -> dict[str, str]:
    servers = status(lab)["virtuals"][0]["servers"]
    return {s["name"]: s["state"] for s in servers}


def active(lab: Lab) -> str | None:
    owners = [r for r in lab.routers if lab.vip in lab.exec(r, "ip", "-br", "addr").stdout]
    return owners[0] if len(owners) == 1 else None


def load(lab: Lab, count: int, concurrency: int = 50) -> dict:
    res = lab.exec("client", PY, CLIENT, lab.vip, str(count), "--concurrency",
                   str(concurrency), timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def push(lab: Lab, serial: int, **virtual: object) -> None:
    path = lab.tmp / f"lvs-{serial}.cf"  # type: ignore[attr-defined]
    path.write_text(config_text(lab.topo, serial, **virtual))  # type: ignore[attr-defined]
    ctl(lab, "config", "push", str(path))


def syn_counter(lab: Lab, host: str) -> Callable[[], int]:
    """Count the client's TCP SYNs reaching ``host``'s port 80 (NAT keeps the client's
    address; the routers' own health checks come from theirs and are not counted)."""
    client = lab.address("client")
    rules = ("table inet synct {\n chain in {\n type filter hook input priority -10\n"
             f" ip saddr {client} tcp dport 80 tcp flags & (syn | ack) == syn counter\n"
             " }\n}\n")
    lab.exec(host, "nft", "-f", "-", input=rules, check=True)

    def read() -> int:
        out = json.loads(lab.exec(host, "nft", "-j", "list", "table", "inet", "synct").stdout)
        for item in out["nftables"]:
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    return int(expr["counter"]["packets"])
        raise AssertionError("no counter")

    return read


def test_connections_spread_by_weight(lab: Lab) -> None:
    result = load(lab, 1000)
    answers = result["answers"]
    assert sum(answers.values()) == 1000, result
    # rs1 has weight 3, rs2 weight 1: expect 750; 4 binomial sigmas is +-55.
    assert abs(answers.get("rs1", 0) - 750) <= 55, answers
    assert set(answers) == {"rs1", "rs2"}


def test_drain_keeps_existing_connections_and_takes_no_new_ones(lab: Lab) -> None:
    script = (
        "import socket,sys,time,subprocess\n"
        "s=socket.create_connection((sys.argv[1],80))\n"
        "def ask():\n"
        "    s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); d=b''\n"
        "    while not d.endswith(b'\\n') or b'\\r\\n\\r\\n' not in d: d+=s.recv(4096)\n"
        "    return d.split(b'\\r\\n\\r\\n',1)[1].decode().strip()\n"
        "first=ask(); print(first, flush=True); sys.stdin.readline(); print(ask(), flush=True)\n"
    )
    proc = lab.popen("client", PY, "-c", script, lab.vip, stdin=-1, stdout=-1, text=True)
    try:
        first = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert first in ("rs1", "rs2")
        ctl(lab, "drain", "http", first)
        other = "rs2" if first == "rs1" else "rs1"
        wait_for(lambda: set(load(lab, 20)["answers"]) == {other}, 10, "drain in force")
        assert set(load(lab, 200)["answers"]) == {other}
        proc.stdin.write("\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        assert proc.stdout.readline().strip() == first  # type: ignore[union-attr]
        drained = [s for s in status(lab)["virtuals"][0]["servers"] if s["name"] == first]
        assert drained[0]["admin"] == "drain"
    finally:
        proc.kill()
        ctl(lab, "enable", "http", first)
    wait_for(lambda: set(load(lab, 100)["answers"]) == {"rs1", "rs2"}, 10, "enabled again")


def test_killed_server_is_out_within_interval_plus_timeout_and_back_after_reentry(
        lab: Lab) -> None:
    killed_at = time.monotonic()
    lab.kill("rs1")
    took = wait_for(lambda: states(lab)["rs1"] == "down", 10, "rs1 down")
    assert took <= 2 * CHECK + 1.0, f"rs1 out after {took:.2f}s"  # interval + timeout
    result = load(lab, 200)
    assert result["answers"] == {"rs2": 200} and not result["errors"], result
    restarted = time.monotonic()
    lab.start("rs1")
    back = wait_for(lambda: states(lab)["rs1"] == "up", 15, "rs1 back")
    assert back >= REENTRY - 0.1, f"rs1 back after only {back:.2f}s (reentry {REENTRY}s)"
    assert restarted - killed_at > 0
    wait_for(lambda: "rs1" in load(lab, 50)["answers"], 10, "traffic to rs1 again")


def test_quiesce_keeps_existing_connections(lab: Lab) -> None:
    push(lab, 2, quiesce_server=True)
    wait_for(lambda: status(lab)["config"]["serial_no"] == 2, 10, "config 2")
    # Hold a connection to rs1, then make rs1's health checks fail (the routers' new
    # connections are dropped) while the held connection stays usable.
    script = (
        "import socket,sys\n"
        "while True:\n"
        "    s=socket.create_connection((sys.argv[1],80))\n"
        "    s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); d=b''\n"
        "    while b'\\r\\n\\r\\n' not in d or not d.endswith(b'\\n'): d+=s.recv(4096)\n"
        "    if d.split(b'\\r\\n\\r\\n',1)[1].strip()==b'rs1': break\n"
        "    s.close()\n"
        "print('held', flush=True); sys.stdin.readline()\n"
        "s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); d=b''\n"
        "while b'\\r\\n\\r\\n' not in d or not d.endswith(b'\\n'): d+=s.recv(4096)\n"
        "print(d.split(b'\\r\\n\\r\\n',1)[1].decode().strip(), flush=True)\n"
    )
    proc = lab.popen("client", PY, "-c", script, lab.vip, stdin=-1, stdout=-1, text=True)
    routers = " , ".join(lab.address(r, "private") for r in lab.routers)
    block = (f"table inet nocheck {{\n chain in {{\n type filter hook input priority -5\n"
             f" ip saddr {{ {routers} }} tcp dport 80 ct state new drop\n }}\n}}\n")
    try:
        assert proc.stdout.readline().strip() == "held"  # type: ignore[union-attr]
        lab.exec("rs1", "nft", "-f", "-", input=block, check=True)
        wait_for(lambda: states(lab)["rs1"] == "down", 15, "rs1 failing its checks")
        weights = {s["name"]: s for s in status(lab)["virtuals"][0]["servers"]}
        assert weights["rs1"]["state"] == "down"
        assert set(load(lab, 100)["answers"]) == {"rs2"}  # quiesced: no new connections
        proc.stdin.write("\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        assert proc.stdout.readline().strip() == "rs1"  # type: ignore[union-attr]
    finally:
        proc.kill()
        lab.exec("rs1", "nft", "delete", "table", "inet", "nocheck")
    wait_for(lambda: states(lab)["rs1"] == "up", 15, "rs1 up again")
    push(lab, 3)


def test_sorry_server_takes_over_when_all_are_down(lab: Lab) -> None:
    wait_for(lambda: status(lab)["config"]["serial_no"] == 3, 10, "config 3")
    lab.kill("rs1")
    lab.kill("rs2")
    try:
        wait_for(lambda: states(lab) == {"rs1": "down", "rs2": "down"}, 10, "both down")
        wait_for(lambda: load(lab, 20)["answers"] == {"rs3": 20}, 10, "sorry server")
    finally:
        lab.start("rs1")
        lab.start("rs2")
    wait_for(lambda: states(lab) == {"rs1": "up", "rs2": "up"}, 20, "both back")
    wait_for(lambda: set(load(lab, 100)["answers"]) == {"rs1", "rs2"}, 10, "sorry gone")


def test_drift_is_repaired(lab: Lab) -> None:
    owner = active(lab)
    assert owner is not None
    lab.exec(owner, "nft", "flush", "ruleset", check=True)
    took = wait_for(lambda: set(load(lab, 20, 5)["answers"]) == {"rs1", "rs2"}, 15,
                    "service repaired")
    log = lab.log_path(owner).read_text()
    assert "drift" in log, "the repair is logged"
    assert took < 15


def test_failover_keeps_the_health_view(lab: Lab) -> None:
    # rs1's host stays up: any client connection sent its way shows as a SYN there.
    syns = syn_counter(lab, "rs1")
    load(lab, 40)
    assert syns() > 0, "the counter sees client connections to rs1"
    lab.kill("rs1")
    wait_for(lambda: states(lab)["rs1"] == "down", 10, "rs1 down")
    time.sleep(0.5)  # connections in flight when rs1 died have settled
    before = syns()
    old = active(lab)
    assert old is not None
    lab.kill(old, link_down=True)
    try:
        wait_for(lambda: active(lab) not in (None, old), 15, "a new active")
        result = load(lab, 300)
        assert result["answers"] == {"rs2": 300}, result
        assert syns() == before, "the new active sent traffic to the dead server"
        assert states(lab)["rs1"] == "down"
    finally:
        lab.start(old)
        lab.start("rs1")
        lab.exec("rs1", "nft", "delete", "table", "inet", "synct")


def test_full_nat_masquerades_towards_the_real_servers(lab: Lab) -> None:
    def seen_client() -> str:
        res = lab.exec("client", "curl", "-si", "-m", "2", f"http://{lab.vip}/")
        for line in res.stdout.splitlines():
            if line.lower().startswith("x-client:"):
                return line.split(":", 1)[1].strip().rsplit(":", 1)[0]
        return ""

    wait_for(lambda: seen_client() == lab.address("client"), 20, "plain NAT first")
    path = lab.tmp / "lvs-full-nat.cf"  # type: ignore[attr-defined]
    text = config_text(lab.topo, 11)  # type: ignore[attr-defined]
    path.write_text(text.replace("serial_no = 11", "serial_no = 11\nfull_nat = 1"))
    ctl(lab, "config", "push", str(path))
    routers = {lab.address(r, "private") for r in lab.routers}
    wait_for(lambda: seen_client() in routers, 20, "the real server sees a router address")
    push(lab, 12)
    wait_for(lambda: seen_client() == lab.address("client"), 20, "plain NAT again")
