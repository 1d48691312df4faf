"""The pulse agent as an operator meets it, in a two-router lab: leftover VIPs, transition
hooks, metrics, clean shutdown, and clear errors for bad start-up input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.pulse import TEST_DIES_AFTER
from cluster import lvscf
from cluster.store import StoredConfig
from lvslab import Lab, procs
from lvslab.config_file import lab_lvs_cf
from lvslab.topology import Topology
from tests.support.metrics_doc import documented, scraped

pytestmark = pytest.mark.netns

BIN = Path(sys.executable).parent
HOOK = """#!/bin/sh
echo "$1 $LVS_NODE $LVS_TERM" >> {log}
"""


def wait_for(cond: Callable[[], object], limit: float, what: str | Callable[[], str]) -> None:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if cond():
            return
        time.sleep(0.05)
    said = what() if callable(what) else what
    raise AssertionError(f"timed out after {limit}s waiting for {said}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    n = os.getpid() % 100
    topo = Topology(f"ag{n}", f"10.{170 + n % 40}.0.0/24", f"10.{170 + n % 40}.1.0/24",
                    routers=2, servers=1)
    tmp = tmp_path_factory.mktemp("agent")
    hook = tmp / "hook.sh"
    hook.write_text(HOOK.format(log=tmp / "hooks.log"))
    hook.chmod(0o755)
    cfg = lvscf.parse(lab_lvs_cf(topo), "lab.cf").config
    assert cfg is not None
    cfg = cfg.model_copy(update={"active_cmd": f"{hook} active",
                                 "inactive_cmd": f"{hook} inactive"})
    path = tmp / "lvs.cf"
    path.write_text(lvscf.write(cfg))
    with Lab(topo.prefix, topo.public, topo.private, routers=2, servers=1,
             config=path) as lab:
        lab.tmp = tmp  # type: ignore[attr-defined]
        wait_for(lambda: owner(lab) == "r1", 20, "r1 active")
        yield lab


def owner(lab: Lab) -> str | None:
    owners = [r for r in lab.routers if lab.vip in lab.exec(r, "ip", "-br", "addr").stdout]
    return owners[0] if len(owners) == 1 else None


def sample(text: str, name: str) -> float:
    """The value of an unlabelled metric in Prometheus text (-1 if absent)."""
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


def metrics(lab: Lab, router: str) -> str:
    """The router's /metrics text ("" while it does not answer, e.g. just started)."""
    url = f"http://{lab.address(router, 'public')}:9100/metrics"
    res = lab.exec("client", "curl", "-sf", url)
    return res.stdout if res.returncode == 0 else ""


def test_metrics_endpoint(lab: Lab) -> None:
    text = metrics(lab, "r1")
    assert 'lvs_role{role="active"} 1.0' in text
    assert 'dataplane="nftables"' in text
    assert "lvs_dataplane_services 2.0" in text  # the lab's http and echo virtuals
    assert 'lvs_peer_alive{peer="r2"} 1.0' in text
    assert 'lvs_role{role="backup"} 1.0' in metrics(lab, "r2")
    # what a soak test watches for growth: memory, descriptors, tasks
    for name in ("process_resident_memory_bytes", "process_open_fds", "lvs_asyncio_tasks"):
        (value,) = re.findall(rf"^{name} (\S+)$", text, re.M)
        assert float(value) > 0, name
    # Metrics listen on the router's address only, not on every address.
    assert lab.exec("r1", "curl", "-sf", "http://127.0.0.1:9100/metrics").returncode != 0


def value(text: str, name: str, **labels: str) -> float:
    """The value of one sample (labels: a subset of its labels), -1 if absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return s.value
    return -1.0


def test_metrics_are_the_documented_ones(lab: Lab) -> None:
    """docs/metrics.md and a real scrape of both routers have the same series with the same
    labels (less those only IPVS or conntrackd export)."""
    def up(router: str) -> bool:  # reentry = 15 s: up a while after the lab starts
        return value(metrics(lab, router), "lvs_real_server_state", virtual="http",
                     server="rs1", state="up") == 1.0

    wait_for(lambda: up("r1") and up("r2"), 40, "rs1 up, as both routers see it")
    texts = {r: metrics(lab, r) for r in lab.routers}
    got: dict[str, frozenset[str] | None] = {}
    for text in texts.values():
        for name, labels in scraped(text).items():
            got[name] = labels if labels is not None else got.get(name)
    docs = documented()
    assert set(got) <= set(docs), f"not documented: {sorted(set(got) - set(docs))}"
    optional = {name for name, (_, by) in docs.items() if by in ("IPVS", "conntrackd")}
    missing = set(docs) - set(got) - optional
    assert not missing, f"documented, not exported: {sorted(missing)}"
    for name, labels in got.items():
        assert labels is None or labels == docs[name][0], (name, labels, docs[name][0])
    active, backup = texts["r1"], texts["r2"]
    assert value(active, "lvs_build_info") == 1.0
    assert value(active, "lvs_dataplane_backend_info", backend="nftables") == 1.0
    # The backup names the holder from r1's heartbeats (deadtime 2 s): on a loaded machine a
    # late one can blank it for a moment, so that part is waited for, and shown if it fails.
    def holder_lines() -> list[str]:
        return [f"{r}: {line}" for r in lab.routers for line in metrics(lab, r).splitlines()
                if line.startswith("lvs_vip_info{")]

    wait_for(lambda: all(value(metrics(lab, r), "lvs_vip_info", vip=lab.vip, router="r1")
                         == 1.0 for r in lab.routers), 10,
             lambda: f"both routers name r1 as the VIP's holder: {holder_lines()}")
    for text in (active, backup):
        assert value(text, "lvs_etcd_reachable") == 1.0
        assert value(text, "lvs_lease_refresh_latency_seconds_count") > 0
        assert value(text, "lvs_config_stored_serial") == value(text, "lvs_config_serial") > 0
    assert 0 <= value(active, "lvs_heartbeat_peer_age_seconds", peer="r2") < 2
    assert value(active, "lvs_garp_sent_total") > 0 and value(backup, "lvs_garp_sent_total") == 0
    assert value(active, "lvs_real_server_state", virtual="http", server="rs1",
                 state="up") == 1.0
    assert value(active, "lvs_real_server_state", virtual="http", server="rs1",
                 state="down") == 0.0
    assert value(active, "lvs_real_server_weight", virtual="http", server="rs1") >= 1
    assert value(active, "lvs_checks_by_result_total", result="ok") > 0
    assert value(active, "lvs_check_duration_seconds_count") > 0
    assert value(active, "lvs_etcd_request_duration_seconds_count", op="txn") > 0
    assert value(backup, "lvs_leader_changes_total", reason="first") == 1.0


def test_kernel_traffic_counters_follow_requests_through_the_vip(lab: Lab) -> None:
    holder = owner(lab)
    assert holder is not None
    where = {"virtual": "http", "server": "rs1"}
    wait_for(lambda: value(metrics(lab, holder), "lvs_real_server_state", state="up",
                           **where) == 1.0, 40, "rs1 up")
    names = ("lvs_virtual_connections_total", "lvs_virtual_packets_in_total",
             "lvs_virtual_bytes_out_total", "lvs_real_server_connections_total",
             "lvs_real_server_packets_out_total", "lvs_real_server_bytes_in_total")

    def read() -> dict[str, float]:
        text = metrics(lab, holder)
        return {n: value(text, n, **(where if "real_server" in n else {"virtual": "http"}))
                for n in names}

    # present (nftables counts them) once a counter read after rs1 came in is served: a
    # read is reused for a second (or 5x as long as it took)
    wait_for(lambda: all(v >= 0 for v in read().values()), 15, "rs1's traffic series")
    before = read()
    requests = 5
    for _ in range(requests):
        res = lab.exec("client", "curl", "-sf", "-o", "/dev/null", f"http://{lab.vip}/")
        assert res.returncode == 0, res.stderr
    time.sleep(1.1)  # the counters are read at most once a second
    after = read()
    assert after["lvs_virtual_connections_total"] >= (
        before["lvs_virtual_connections_total"] + requests)
    assert after["lvs_real_server_connections_total"] >= (
        before["lvs_real_server_connections_total"] + requests)
    for name in names:
        assert after[name] > before[name], (name, before[name], after[name])


def test_active_cmd_ran_without_a_shell(lab: Lab) -> None:
    log = lab.tmp / "hooks.log"  # type: ignore[attr-defined]
    wait_for(log.exists, 10, "the hook")
    first = log.read_text().splitlines()[0].split()
    assert first[:2] == ["active", "r1"] and int(first[2]) > 0


def test_leftover_vip_is_removed_at_start(lab: Lab) -> None:
    lab.kill("r2")
    lab.exec("r2", "ip", "addr", "add", f"{lab.vip}/24", "dev", "eth0", "label", "eth0:1",
             check=True)
    lab.start_agent("r2")
    wait_for(lambda: lab.vip not in lab.exec("r2", "ip", "-br", "addr").stdout, 15,
             "the leftover VIP removed")
    assert owner(lab) == "r1"
    assert "leftover" in lab.log_path("r2").read_text()


def test_sigterm_hands_over_and_exits_cleanly(lab: Lab) -> None:
    pid = lab.pid("r1")
    assert pid is not None
    wait_for(lambda: 'lvs_peer_alive{peer="r1"} 1.0' in metrics(lab, "r2"), 10, "r2 ready")
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: owner(lab) == "r2", 5, "r2 active")
    # The hand-over is a failover as r2 measures it: r1 judged gone, then r2's VIPs up.
    wait_for(lambda: value(metrics(lab, "r2"), "lvs_failover_duration_seconds_count") >= 1,
             5, "the failover measured on r2")
    text = metrics(lab, "r2")
    assert 0 < value(text, "lvs_failover_duration_seconds_sum") < 10
    assert value(text, "lvs_leader_changes_total", reason="resigned") >= 1
    wait_for(lambda: not lab.alive("r1"), 10, "r1 exited")
    log = lab.tmp / "hooks.log"  # type: ignore[attr-defined]
    wait_for(lambda: any(line.startswith("inactive r1") for line in
                         log.read_text().splitlines()), 10, "inactive_cmd on r1")
    text = lab.log_path("r1").read_text()
    assert "resigned term" in text and "stopped" in text and "Traceback" not in text
    lab.start_agent("r1")
    wait_for(lambda: 'lvs_role{role="backup"} 1.0' in metrics(lab, "r1"), 15, "r1 back")
    assert owner(lab) == "r2"  # no preemption by default


def test_bad_start_up_input_is_one_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.cf"
    broken.write_text("serial_no = 1\nvirtual web {\n  scheduler = fastest\n")
    res = subprocess.run([str(BIN / "pulse"), "--node", "r1", "--config", str(broken)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "LVS_HEARTBEAT_KEY": "k" * 32})
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"{broken}:3:" in res.stderr
    nodev = tmp_path / "nodev.cf"  # reads well, cannot run: refused the same way
    nodev.write_text("serial_no = 1\nprimary = 10.0.0.2\nvirtual web {\n"
                     "  address = 10.0.0.100\n}\n")
    res = subprocess.run([str(BIN / "pulse"), "--node", "primary", "--config", str(nodev)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "LVS_HEARTBEAT_KEY": "k" * 32})
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"{nodev}:4: virtual 'web': address 10.0.0.100 needs a device" in res.stderr
    res = subprocess.run([str(BIN / "pulse"), "--node", "r1"], capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items()
                                          if not k.startswith("LVS_")})
    assert res.returncode == 1 and "heartbeat key" in res.stderr
    assert "Traceback" not in res.stderr


def test_junk_in_etcd_is_counted_never_fatal(lab: Lab) -> None:
    holder = owner(lab)
    assert holder is not None
    prefix = "/lvs/default/"
    junk = {"control/switchover": '{"to": 5, "term": "x"}', "control/released": "[1, 2]",
            "admin/http/rs1": '{"state": "explode"}', "health/http/rs1": "not json",
            "nodes/ghost": "{bad", "bogus/key/here": "1", "control/evict-r9": '{"term": "t"}'}
    for key, value in junk.items():
        res = lab.exec("client", "etcdctl", "--endpoints", lab.etcd_url, "put",
                       prefix + key, value)
        assert res.returncode == 0, res.stderr
    wait_for(lambda: sample(metrics(lab, holder), "lvs_etcd_junk_total") >= 3, 10,
             "junk counted")
    time.sleep(1.0)
    assert owner(lab) == holder and lab.alive("r1") and lab.alive("r2")
    for key in junk:
        lab.exec("client", "etcdctl", "--endpoints", lab.etcd_url, "del", prefix + key)


def stored_health(lab: Lab, virtual: str) -> set[str]:
    """The servers of ``virtual`` with a verdict in etcd (its group documents, as etcdctl
    shows them)."""
    out = lab.exec("client", "etcdctl", "--endpoints", lab.etcd_url, "get", "--prefix",
                   "--print-value-only", f"/lvs/default/health/{virtual}/").stdout
    return {name for line in out.splitlines() if line.startswith("{")
            for name in json.loads(line).get("servers", {})}


def test_health_of_a_removed_server_is_removed(lab: Lab) -> None:
    wait_for(lambda: "rs1" in stored_health(lab, "http"), 15, "rs1's health in etcd")
    text = lab.config_path.read_text().replace("server rs1 {", "server web1 {")
    text = text.replace("serial_no = 1", "serial_no = 50")
    path = lab.tmp / "renamed.cf"  # type: ignore[attr-defined]
    path.write_text(text)
    res = lab.exec("client", str(BIN / "lvsctl"), "--etcd", lab.etcd_url, "config", "push",
                   str(path))
    assert res.returncode == 0, res.stderr
    wait_for(lambda: "rs1" not in stored_health(lab, "http"), 15, "rs1's health removed")
    wait_for(lambda: "web1" in stored_health(lab, "http"), 15, "web1's health written")


def node_record(lab: Lab, node: str) -> dict[str, object] | None:
    """``nodes/<node>`` as etcd holds it (None if absent)."""
    res = lab.exec("client", "etcdctl", "--endpoints", lab.etcd_url, "get",
                   "--print-value-only", f"/lvs/default/nodes/{node}")
    return json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else None


def push(lab: Lab, text: str, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = lab.tmp / name  # type: ignore[attr-defined]
    path.write_text(text)
    return lab.exec("client", str(BIN / "lvsctl"), "--etcd", lab.etcd_url, "config", "push",
                    *args, str(path))


def test_node_record_says_which_config_runs_and_which_was_refused(lab: Lab) -> None:
    base = lab.config_path.read_text()
    old = node_record(lab, "r2")
    assert old is not None and old["config_refused"] is None
    assert isinstance(old["config_serial"], int)

    # Only r2 refuses: it is not among the routers of serial 60 (a per-router refusal);
    # push --wait says who refused and why.
    res = push(lab, base.replace("serial_no = 1", "serial_no = 60").replace(
        "router r2 {", "router r9 {"), "no-r2.cf", "--wait", "--timeout", "15")
    assert res.returncode == 1 and "stored serial_no 60" in res.stdout
    assert ("r2 refused serial_no 60: node 'r2' is not a router of this configuration "
            "(routers: r1, r9)") in res.stderr, res.stderr
    wait_for(lambda: (node_record(lab, "r2") or {}).get("config_refused"), 10, "r2 refusing")
    r2 = node_record(lab, "r2")
    assert r2 is not None and r2["config_serial"] == old["config_serial"]
    assert r2["config_refused"] == {
        "serial_no": 60, "reason": "node 'r2' is not a router of this configuration "
                                   "(routers: r1, r9)"}
    wait_for(lambda: (node_record(lab, "r1") or {}).get("config_serial") == 60, 10,
             "r1 running serial_no 60")
    assert node_record(lab, "r1")["config_refused"] is None  # type: ignore[index]

    # Every router refuses serial 61, written past lvsctl (e.g. by an older one): its VIP
    # has no device. The reason cites the line of the pushed text.
    text = base.replace("serial_no = 1", "serial_no = 61").replace(
        f"{lab.vip} eth0:1", lab.vip)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if f"= {lab.vip}" in t)
    cfg = lvscf.parse(text).config
    assert cfg is not None
    value = StoredConfig(cfg, text, "now", "an old lvsctl").encode()
    res = lab.exec("client", "etcdctl", "--endpoints", lab.etcd_url, "put",
                   "/lvs/default/config", input=value)
    assert res.returncode == 0, res.stderr
    for node, running in (("r1", 60), ("r2", old["config_serial"])):
        wait_for(lambda n=node: ((node_record(lab, n) or {}).get("config_refused") or {})
                 .get("serial_no") == 61, 10, f"{node} refusing serial_no 61")
        record = node_record(lab, node)
        assert record is not None and record["config_serial"] == running
        assert record["config_refused"]["reason"].startswith(  # type: ignore[index]
            f"lvs.cf:{line}: virtual 'http': address {lab.vip} needs a device")
    assert owner(lab) is not None

    # A config every router runs clears the refusals.
    res = push(lab, base.replace("serial_no = 1", "serial_no = 62"), "good.cf", "--wait")
    assert res.returncode == 0, res.stderr
    assert "serial_no 62 runs on every live router: r1, r2" in res.stdout
    for node in ("r1", "r2"):
        wait_for(lambda n=node: (node_record(lab, n) or {}).get("config_serial") == 62, 10,
                 f"{node} running serial_no 62")
        assert node_record(lab, node)["config_refused"] is None  # type: ignore[index]
    wait_for(lambda: owner(lab) is not None, 10, "one VIP owner")


def test_a_dying_task_hands_over_and_exits_non_zero(lab: Lab) -> None:
    """SIGTERM: exit status 0. An internal task dies (the test-only hook): the router hands
    over, logs the task and the error, and exits with status 1 for its supervisor."""
    holder = owner(lab)
    assert holder is not None
    other = next(r for r in lab.routers if r != holder)
    lab.kill(other)
    log = lab.tmp / f"{other}-direct.log"  # type: ignore[attr-defined]

    def start(**env: str) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return lab.popen(other, *lab.command(other), env={**procs.env(), **env},
                             stdout=out, stderr=subprocess.STDOUT)

    def backup_ready() -> bool:
        return (f'lvs_peer_alive{{peer="{holder}"}} 1.0' in metrics(lab, other)
                and f'lvs_peer_alive{{peer="{other}"}} 1.0' in metrics(lab, holder))

    try:
        proc = start()
        wait_for(backup_ready, 15, f"{other} a ready backup")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0

        proc = start(**{TEST_DIES_AFTER: "8"})
        wait_for(backup_ready, 15, f"{other} a ready backup again")
        res = lab.exec("client", str(BIN / "lvsctl"), "--etcd", lab.etcd_url, "switchover",
                       "--to", other)
        assert res.returncode == 0, res.stderr
        assert owner(lab) == other and proc.poll() is None  # it was active before dying
        assert proc.wait(timeout=20) == 1
        wait_for(lambda: owner(lab) == holder, 3, f"{holder} holding the VIP again")
        text = log.read_text()
        assert re.search(r"ERROR agent\.pulse: internal task test-dies died: RuntimeError: "
                         rf"{TEST_DIES_AFTER}=8: dying as the test asked", text), text[-3000:]
        assert "resigned term" in text and "exiting with status 1" in text
    finally:
        lab.start_agent(other)
    wait_for(lambda: 'lvs_role{role="backup"} 1.0' in metrics(lab, other), 15,
             f"{other} back as a backup")


def test_a_router_that_cannot_run_the_stored_config_from_the_start_says_so(lab: Lab) -> None:
    """An agent started with a --node the stored config does not know (a typo, a router
    not added yet) registers as "starting" with its refusal; status names it."""
    holder = owner(lab)
    other = next(r for r in lab.routers if r != holder)
    lab.kill(other)
    argv = lab.command(other)
    argv[argv.index("--node") + 1] = "r7"
    log = lab.tmp / "r7.log"  # type: ignore[attr-defined]
    with open(log, "ab") as out:
        proc = lab.popen(other, *argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: node_record(lab, "r7"), 10, "r7 registered")
        r7 = node_record(lab, "r7")
        assert r7 is not None and r7["role"] == "starting" and r7["config_serial"] is None
        assert "node 'r7' is not a router of this configuration" in \
            r7["config_refused"]["reason"]  # type: ignore[index]
        res = lab.exec("client", str(BIN / "lvsctl"), "--etcd", lab.etcd_url, "status",
                       "-o", "json")
        behind = json.loads(res.stdout)["not_running_stored_config"]
        assert [b["node"] for b in behind] == ["r7"], behind
        assert owner(lab) == holder  # nothing else changed
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        lab.start_agent(other)
    wait_for(lambda: node_record(lab, "r7") is None, 5, "r7's record gone with its lease")
    wait_for(lambda: 'lvs_role{role="backup"} 1.0' in metrics(lab, other), 15,
             f"{other} back as a backup")
