"""Is this router's kernel table what the cluster's state says it should be? Run inside a
router's namespace (the nemesis' convergence check):

    python bench/nemesis_tables.py --etcd URLS [--cluster default]

Reads the config, the shared health verdicts, the admin flags and the hash seed from etcd,
computes the desired table with the agent's own pure function, reads the nftables table
and prints ``{"differences": [...]}`` (one line per change the reconciler would make; an
empty list: converged). An idle router programs the same table as the active, so every
router can be checked alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.dataplane.desired import desired_table
from agent.dataplane.nft.backend import NftBackend
from agent.dataplane.reconcile import describe_ops
from agent.dataplane.table import diff
from cluster.etcd.client import Etcd
from cluster.etcd.settings import settings_from
from cluster.keys import Keys
from cluster.status import read_status


async def differences(endpoints: str, cluster: str) -> list[str]:
    async with Etcd(settings_from(endpoints, timeout=3)) as etcd:
        status = await read_status(etcd, Keys(cluster))
    state = status.state
    if state.config is None:
        return ["no valid config in etcd"]
    health = {key: doc.to_health() for key, doc in state.health.items()}
    admin = {key: flag.state for key, flag in state.admin.items()}
    backend = NftBackend(compact_delay=None)
    want = backend.programmable(desired_table(state.config.config, health, admin,
                                              state.hash_seed()))
    have = await backend.read()
    return describe_ops(have, diff(have, want))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--etcd", required=True)
    ap.add_argument("--cluster", default="default")
    args = ap.parse_args()
    print(json.dumps({"differences": asyncio.run(differences(args.etcd, args.cluster))}))


if __name__ == "__main__":
    main()
