#!/usr/bin/env bash
# The test command of the README: the whole suite, slow (kernel build) and vm (QEMU) tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/setup-host.sh
.venv/bin/ruff check pagelab tests scripts
.venv/bin/mypy pagelab  # the level is in pyproject.toml [tool.mypy]
exec .venv/bin/python -m pytest "$@"
