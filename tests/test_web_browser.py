"""The status page in a real browser (headless Chromium) against a real lab: it follows a
crash failover and a real server's death without a reload, and its actions work only
with the token. Screenshots are kept in ``$FAILOVER_LOGS/<pid>/web/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from support.browser import Browser
from support.failover_kit import KEEP, lab_for, netns_mark

pytestmark = netns_mark

LVSCTL = str(Path(sys.executable).parent / "lvsctl")
TOKEN = "browser-test-token-0123456789"


def q(selector: str) -> str:
    """JavaScript: the element matching ``selector``, or null."""
    return f"document.querySelector({json.dumps(selector)})"


def test_the_page_follows_a_failover_and_a_dead_server_and_acts_with_the_token() -> None:
    shots = KEEP / str(os.getpid()) / "web"
    with lab_for("v", routers=2, servers=2) as cluster:
        lab = cluster.lab
        active = cluster.restore()
        backup = next(r for r in lab.routers if r != active)
        token = lab.log_dir / "web.token"
        token.write_text(TOKEN + "\n")
        address = lab.address("client")
        log = (lab.log_dir / "web.log").open("wb")
        web = lab.popen("client", LVSCTL, "--etcd", lab.etcd_endpoints, "--cluster",
                        lab.topology.cluster, "web", "--listen", f"{address}:8080",
                        "--allow-actions", "--token-file", str(token), stdout=log,
                        stderr=subprocess.STDOUT)
        try:
            with Browser(prefix=["ip", "netns", "exec", lab.ns("client")]) as b:
                url = f"http://{address}:8080/"
                deadline = time.monotonic() + 20
                while True:  # the server may still be starting
                    b.open(url)
                    try:
                        b.wait_for(q("#link.up") + " !== null", timeout=2, what="the live stream")
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            page = b.eval("location.href + ' ' + document.body.innerText")
                            page += " " + str(b.console)
                            raise AssertionError(f"the page did not go live: {page}") from None
                row = f'tr[data-router="{active}"]'
                b.wait_for(f"{q(row)}?.dataset.role === 'active'", what=f"{active} active")
                vip = f'tr[data-vip="{lab.vip}"]'
                assert b.wait_for(f"{q(vip)}?.dataset.holder") == active
                # the lease column is filled from etcd, the heartbeat column from metrics
                assert b.wait_for(f"{q(row)}.cells[4].textContent.endsWith(' s')")
                servers = lab.servers
                first = f'tr[data-virtual="http"][data-server="{servers[0]}"]'
                b.wait_for(f"{q(first)}?.dataset.state === 'up'", timeout=30,
                           what=f"{servers[0]} up")
                b.screenshot(shots / "1-start.png")
                opened = b.eval("performance.timeOrigin")

                # a crash of the active: the page follows without a reload
                lab.kill(active, link_down=True)
                new = cluster.wait_one_holder(other_than=active)
                assert new == backup
                b.wait_for(f"{q(vip)}?.dataset.holder === {json.dumps(new)}",
                           what=f"the VIP held by {new}")
                b.wait_for(f"{q('tr[data-kind=failover]')} !== null", what="a failover event")
                text = b.eval(q("#events tbody") + ".textContent")
                assert f"{new} took over from {active}" in text, text
                b.screenshot(shots / "2-failover.png")

                # a real server dies: its row turns down, a health event appears
                lab.kill(servers[0], link_down=True)
                b.wait_for(f"{q(first)}?.dataset.state === 'down'", timeout=30,
                           what=f"{servers[0]} down")
                b.wait_for(f"{q('tr[data-kind=health]')} !== null", what="a health event")
                b.screenshot(shots / "3-server-down.png")

                # actions: refused with a wrong token, done with the right one
                second = f'tr[data-virtual="http"][data-server="{servers[1]}"]'
                b.eval(f"{q('#token')}.value = 'wrong'")
                b.eval(f"{q(second)}.querySelector('button[data-action=drain]').click()")
                b.wait_for(f"{q('#result')}.textContent.startsWith('refused')",
                           what="the wrong token refused")
                b.eval(f"{q('#token')}.value = {json.dumps(TOKEN)}")
                b.eval(f"{q(second)}.querySelector('button[data-action=drain]').click()")
                b.wait_for(f"{q(second)}?.cells[4].textContent === 'drain'",
                           what=f"{servers[1]} drained")
                status = cluster.status()
                assert status is not None
                admin = {(v["name"], s["name"]): s["admin"] for v in status["virtuals"]
                         for s in v["servers"]}
                assert admin["http", servers[1]] == "drain"
                b.screenshot(shots / "4-drained.png")
                assert b.eval("performance.timeOrigin") == opened  # never reloaded
                assert not [m for m in b.console if m.startswith("exception")], b.console
        finally:
            web.terminate()
            web.wait(10)
            log.close()
    for name in ("1-start", "2-failover", "3-server-down", "4-drained"):
        png = shots / f"{name}.png"
        assert png.stat().st_size > 10_000, png  # a rendered page, not a blank one
    print(f"\nscreenshots: {shots}")
