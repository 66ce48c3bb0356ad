#!/usr/bin/env bash
# The test command of the README: the whole suite, slow (kernel build) and vm (QEMU) tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
# Host set-up runs only when there is no venv yet: a developer's re-run stays fast, but an existing venv means
# new apt packages or a newer linux-source-7.3 are not fetched. Run scripts/setup-host.sh yourself after
# pulling changes to it (it is idempotent); CI starts from a fresh container, so it always runs there.
[ -x .venv/bin/python ] || scripts/setup-host.sh
.venv/bin/ruff check pagelab tests scripts
.venv/bin/mypy pagelab  # the level is in pyproject.toml [tool.mypy]
# The slowest tests and fixtures, for whoever reads a CI log wondering where the time went.
exec .venv/bin/python -m pytest --durations=25 "$@"
