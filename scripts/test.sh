#!/usr/bin/env bash
# The whole test suite: lint, then pytest (which starts its own etcd on free loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/pytest "$@"
