#!/usr/bin/env bash
# The test command: installs what the tests need (PostgreSQL 15 + PostGIS from the distribution,
# a virtualenv with bronzeline and its dev dependencies), starts a throwaway cluster on its own
# port, runs lint, type checks and the whole suite, stops the cluster. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv
    "$PY" -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# dev includes every extra (demo, serve, s3, dagster): the suite covers the demo, the status page, S3 and
# the Dagster definitions.
.venv/bin/python -m pip install -q -e '.[dev]'

# Headless Chromium for the status-page test (tests/integration/test_serve.py), from the distribution.
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium from the distribution" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2
fi

cluster="${TMPDIR:-/tmp}/bronzeline-pgtest-${BRONZELINE_TEST_PORT:-54329}"
port=${BRONZELINE_TEST_PORT:-54329}
export BRONZELINE_TEST_PG
BRONZELINE_TEST_PG=$(scripts/pg-test-cluster.sh start "$cluster" "$port")
trap 'scripts/pg-test-cluster.sh stop "$cluster"' EXIT

.venv/bin/ruff check src tests bench
.venv/bin/mypy
# Two workers: most of a test's time is waiting on PostgreSQL, subprocesses and timers, and every test has
# its own databases, logins and slot names (BRONZELINE_TEST_WORKERS=0 runs them in one process).
.venv/bin/python -m pytest -q -n "${BRONZELINE_TEST_WORKERS:-2}" "$@"
