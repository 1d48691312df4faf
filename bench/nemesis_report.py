"""The nemesis' picture: one timeline a person reads at a glance.

Rows from the top: every fault that ran (a bar from its start to its heal, labelled), the
owner of each VIP as the ARP probers saw it (one colour per router), the service gaps the
HTTP prober saw (red), and the long-lived connections still open (a line). Violations are
red vertical lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.nemesis_plan import KINDS

if TYPE_CHECKING:
    from bench.nemesis import Result

COLOURS = ["tab:blue", "tab:green", "tab:purple", "tab:olive", "tab:cyan"]
FAMILY = {"router": "tab:orange", "pair": "tab:brown", "member": "tab:gray",
          "etcd": "tab:gray", "server": "tab:pink", "config": "tab:olive", "host": "tab:cyan"}


def write_png(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = result.t0
    ran = [a for a in result.applied if not a.skipped]
    rep = result.report
    vips = list(rep.own) if rep is not None else []
    fig_h = 2.5 + 0.22 * len(ran) + 0.5 * len(vips)
    fig, (ax, conn_ax) = plt.subplots(2, 1, figsize=(14, fig_h), sharex=True,
                                      gridspec_kw={"height_ratios": [max(3, len(ran) // 3 + 2), 1]})
    rows: list[str] = []
    for a in ran:
        y = len(rows)
        rows.append(f"#{a.step.index} {a.kind} {a.target}".strip())
        start, end = a.started - t0, max(a.healed - t0, a.started - t0 + 0.15)
        ax.barh(y, end - start, left=start, height=0.7,
                color=FAMILY[KINDS[a.kind].target], alpha=0.85)
    routers: dict[str, str] = {}
    for ip in vips:
        y = len(rows)
        rows.append(f"owner of {ip}")
        assert rep is not None
        for i in rep.own[ip].intervals:
            name = rep.names.get(i.mac, i.mac)
            colour = routers.setdefault(name, COLOURS[len(routers) % len(COLOURS)])
            ax.barh(y, i.end - i.start, left=i.start - t0, height=0.7, color=colour)
        for o in rep.own[ip].overlaps:
            ax.barh(y, max(o.end - o.start, 0.1), left=o.start - t0, height=0.9, color="red")
    y = len(rows)
    rows.append("service gaps (HTTP)")
    for g in result.history.gaps:
        ax.barh(y, max(g.duration, 0.05), left=g.start - t0, height=0.7, color="red")
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.invert_yaxis()
    for v in result.violations:
        if v.t > 0:
            ax.axvline(v.t - t0, color="red", linewidth=1.5)
            conn_ax.axvline(v.t - t0, color="red", linewidth=1.5)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in routers.values()]
    if handles:
        ax.legend(handles, list(routers), loc="lower right", fontsize=7, title="VIP owner")
    verdict = ("no violation" if not result.violations
               else f"{len(result.violations)} violation(s): {result.violations[0].check}")
    ax.set_title(f"nemesis seed {result.seed}: {len(ran)} faults, {verdict}")
    _connections(conn_ax, result, t0)
    conn_ax.set_xlabel("seconds since the campaign started")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _connections(ax: Any, result: Result, t0: float) -> None:
    conns = result.history.conns
    end = result.end - t0
    breaks = sorted(c.broke - t0 for c in conns if c.broke is not None)
    xs, ys, alive = [0.0], [len(conns)], len(conns)
    for t in breaks:
        xs += [t, t]
        ys += [alive, alive - 1]
        alive -= 1
    xs.append(end)
    ys.append(alive)
    ax.plot(xs, ys, color="black")
    ax.set_ylim(0, max(len(conns), 1) * 1.1)
    ax.set_ylabel("connections\nopen", fontsize=8)
