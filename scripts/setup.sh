#!/usr/bin/env bash
# Install everything the project and its tests need on a fresh Debian 12 machine (root):
# Debian packages, then a venv in .venv with the project and its pinned test dependencies.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(etcd-server etcd-client nftables iproute2 iputils-ping arping tcpdump ipvsadm
      keepalived docker-compose curl openssl qemu-system-x86 busybox-static kmod udev file
      conntrackd conntrack stress-ng prometheus chromium)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packaged daemons (etcd, keepalived) must not start system services: we run our own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "setup: installing the project and test dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
  touch "$stamp"
fi
