#!/usr/bin/env bash
# The README's main command. Until the agent lands it starts a local etcd (data in
# /tmp/piranha-lab), pushes deploy/examples/lvs.cf and shows `lvsctl status`.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=/tmp/piranha-lab
port=${LAB_ETCD_PORT:-23790}
mkdir -p "$dir"
if ! curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
  etcd --name lab --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-cluster "lab=http://127.0.0.1:$((port + 1))" >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"
  for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done
fi
export LVS_ETCD="http://127.0.0.1:$port" LVS_CLUSTER=lab
.venv/bin/lvsctl config push --force deploy/examples/lvs.cf
.venv/bin/lvsctl status
echo
echo "etcd runs at $LVS_ETCD (pid $(cat "$dir/etcd.pid" 2>/dev/null || echo '?')); stop it with: kill \$(cat $dir/etcd.pid)"
