"""lvs.cf texts of any size: ``nv`` virtuals of ``ns`` real servers each (scale tests and
bench/scale.py)."""

from __future__ import annotations


def big_cf(nv: int, ns: int, serial: int = 1) -> str:
    """Virtual ``webN`` on 10.100-.x.y:80, its servers ``rsM`` on 10.200-.x.y (all distinct
    within a virtual); NAT, two routers."""
    out = [f"serial_no = {serial}", "primary = 10.0.0.1", "backup = 10.0.0.2",
           "service = lvs", "network = nat", ""]
    for v in range(nv):
        a, b = divmod(v, 250)
        out += [f"virtual web{v} {{", "    active = 1",
                f"    address = 10.{100 + a // 250}.{a % 250}.{b + 1} eth0:1",
                "    port = 80", "    scheduler = wlc", "    timeout = 10"]
        for s in range(ns):
            out += [f"    server rs{s} {{",
                    f"        address = 10.{200 + s // 62500}.{s // 250 % 250}.{s % 250 + 1}",
                    "        active = 1", "        weight = 1", "    }"]
        out.append("}")
    return "\n".join(out) + "\n"
