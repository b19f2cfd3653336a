#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs the Debian packages the tests
# run for real (redis-server, redis-sentinel, promtool, Alertmanager and amtool, docker-compose, caddy, chromium), the Python
# package with its test extras in .venv (the versions of requirements/test.lock), then runs ruff, mypy and pytest on every core (pytest-xdist).
#   bash scripts/test.sh            everything
#   bash scripts/test.sh --quick    the in-process tests of every package (the `quick` marker), for the edit-test loop
# Other arguments go to pytest (a file, -k, -x, ...). Timings: docs/development.md.
set -euo pipefail
cd "$(dirname "$0")/.."

selection=()
if [ "${1:-}" = "--quick" ]; then
  shift
  selection=(-m quick)
  # Fewer hypothesis examples per property in the quick loop; the whole suite runs the default.
  export BILLINGWATCH_FUZZ_EXAMPLES="${BILLINGWATCH_FUZZ_EXAMPLES:-15}"
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
missing=""
for pair in redis-server:redis-server redis-sentinel:redis-sentinel promtool:prometheus prometheus-alertmanager:prometheus-alertmanager \
            amtool:prometheus-alertmanager docker-compose:docker-compose caddy:caddy chromium:chromium; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair##*:}"
done
if [ -n "$missing" ]; then
  echo "installing Debian packages:$missing"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
# The pinned, hash-checked versions of requirements/test.lock (scripts/lock.sh), then our package on them.
.venv/bin/pip install -q --disable-pip-version-check --require-hashes -r requirements/test.lock
.venv/bin/pip install -q --disable-pip-version-check --no-deps -e .

.venv/bin/ruff check .
.venv/bin/mypy
# One worker per core (PYTEST_XDIST_AUTO_NUM_WORKERS overrides); a module whose fixtures start servers once for the module stays on one
# worker (loadgroup: tests/conftest.py marks them), every other test goes wherever a worker is free.
.venv/bin/python -m pytest -n logical --dist loadgroup ${selection[@]+"${selection[@]}"} "$@"
