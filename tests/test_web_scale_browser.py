"""The status page of a large cluster in headless Chromium: 300 virtual services of 16 real
servers (4,800 rows) start closed, a health change updates its own virtual's box without a
reload and leaves the others' untouched, and an opened box builds its server rows."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.browser import Browser

from cluster.documents import HealthVerdict
from cluster.keys import Keys
from lvslab.etcd_server import LocalEtcd
from tests.support.big_config import big_cf

pytestmark = [pytest.mark.etcd, pytest.mark.scale]

LVSCTL = str(Path(sys.executable).parent / "lvsctl")


def q(selector: str) -> str:
    return f"document.querySelector({json.dumps(selector)})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_large_page_patches_only_what_changed(etcd_server: LocalEtcd, cluster_name: str,
                                                tmp_path: Path) -> None:
    keys = Keys(cluster_name)
    cf = tmp_path / "big.cf"
    cf.write_text(big_cf(300, 16))
    subprocess.run([LVSCTL, "--etcd", etcd_server.url, "--cluster", cluster_name, "config",
                    "push", str(cf)], check=True, capture_output=True, timeout=60)
    port = free_port()
    log = (tmp_path / "web.log").open("wb")
    web = subprocess.Popen([LVSCTL, "--etcd", etcd_server.url, "--cluster", cluster_name,
                            "web", "--listen", f"127.0.0.1:{port}"], stdout=log,
                           stderr=subprocess.STDOUT)
    try:
        with Browser() as b:
            deadline = time.monotonic() + 20
            while True:
                b.open(f"http://127.0.0.1:{port}/")
                try:
                    b.wait_for(q("#link.up") + " !== null", timeout=2, what="the live stream")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
            web7 = 'details[data-virtual="web7"]'
            b.wait_for("document.querySelectorAll('details.virtual').length === 300",
                       what="300 virtual boxes")
            assert b.eval("document.querySelectorAll('details.virtual[open]').length") == 0
            assert b.eval("document.querySelectorAll('tr[data-server]').length") == 0
            assert b.eval(f"{q(web7)}.textContent").endswith("0/16 up")
            # mark every box's summary: a box the page rebuilds loses its mark
            b.eval("document.querySelectorAll('details.virtual > summary')"
                   ".forEach(s => s.dataset.mark = '1')")
            opened = b.eval("performance.timeOrigin")
            etcd_server.etcdctl("put", keys.health("web7", "rs3"),
                                HealthVerdict(state="up", observed_by=("r1",)).encode())
            b.wait_for(f"{q(web7)}.textContent.endsWith('1/16 up')", what="web7 1/16 up")
            rebuilt = b.eval("[...document.querySelectorAll('details.virtual > summary')]"
                             ".filter(s => !s.dataset.mark).map(s => s.parentNode.dataset"
                             ".virtual)")
            assert rebuilt == ["web7"]
            b.eval(f"{q(web7)}.open = true")
            row = 'tr[data-virtual="web7"][data-server="rs3"]'
            assert b.wait_for(f"{q(row)}?.dataset.state", what="web7's rows") == "up"
            assert b.eval("document.querySelectorAll('tr[data-server]').length") == 16
            assert b.eval("performance.timeOrigin") == opened  # never reloaded
            assert not [m for m in b.console if m.startswith("exception")], b.console
    finally:
        web.terminate()
        web.wait(10)
        log.close()
