#!/usr/bin/env bash
# The whole test suite: lint, pytest (it starts its own etcd on free loopback ports and
# builds its own network namespaces), then the real-IPVS tests in one QEMU guest boot.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/pytest "$@"
.venv/bin/python scripts/ipvs_vm.py
