"""DesiredTables: the desired table rebuilt per changed virtual equals the full rebuild, and
keeps the objects of the virtuals that did not change (the reconciler's diff skips them)."""

from __future__ import annotations

import random

import pytest

from agent.dataplane.desired import DesiredTables, desired_table
from agent.dataplane.table import diff
from cluster import lvscf
from cluster.health import Health, ServerKey
from tests.support.big_config import big_cf


@pytest.fixture(scope="module")
def cfg():
    c = lvscf.parse(big_cf(60, 8), "t.cf").config
    assert c is not None
    return c


def test_equal_to_the_full_rebuild_through_random_changes(cfg) -> None:
    rng = random.Random(7)
    keys = [ServerKey(v.name, s.name) for v in cfg.virtuals for s in v.servers]
    health = {k: Health("up") for k in keys}
    admin: dict[ServerKey, str] = {}
    tables = DesiredTables()
    before = tables.table(cfg, health, admin)
    for step in range(200):
        key = rng.choice(keys)
        what = rng.random()
        if what < 0.5:
            health[key] = Health(rng.choice(["up", "down", "unknown"]),
                                 weight=rng.choice([None, 0, 3]))
        elif what < 0.8:
            admin[key] = rng.choice(["drain", "disable"])
        else:
            admin.pop(key, None)
        seed = 1 if step > 150 else 0
        after = tables.table(cfg, dict(health), dict(admin), seed)
        assert after == desired_table(cfg, health, admin, seed)
        changed = {k for k in after if after[k] is not before.get(k)}
        assert len(changed) <= (1 if step != 151 else len(after))  # seed: all anew
        before = after


def test_an_unchanged_virtual_keeps_its_service_object(cfg) -> None:
    health = {ServerKey(v.name, s.name): Health("up") for v in cfg.virtuals for s in v.servers}
    tables = DesiredTables()
    a = tables.table(cfg, health, {})
    health[ServerKey("web3", "rs2")] = Health("down")
    b = tables.table(cfg, health, {})
    moved = [k for k in b if a[k] is not b[k]]
    assert [k.address for k in moved] == ["10.100.0.4"]
    assert len(diff(a, b)) == 1
    with pytest.raises(ValueError, match="drain or disable"):
        tables.table(cfg, health, {ServerKey("web3", "rs2"): "explode"})
    new = cfg.model_copy()  # a new config object: everything anew
    assert all(tables.table(new, health, {})[k] is not b[k] for k in b)
