#!/usr/bin/env bash
# The lock files, with hashes, from pyproject.toml (docs/development.md "Dependencies"):
#   requirements/runtime.lock  the runtime dependencies: the Dockerfile installs them with --require-hashes
#   requirements/test.lock     the runtime and the test extra: scripts/test.sh (CI) installs them the same way
# Rerun after any change to the dependencies in pyproject.toml; tests/test_lock.py fails until you do.
# Deterministic: for CPython 3.11 on Linux (the image's python:3.11-slim), from the releases PyPI had at
# LOCK_DATE only; move LOCK_DATE forward to take newer releases. The test lock keeps every runtime pin.
# Takes about 2 s with uv (https://docs.astral.sh/uv/): on PATH, in .venv, or installed into .venv here.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCK_DATE="${LOCK_DATE:-2026-12-03T00:00:00Z}"

uv="$(command -v uv || true)"
if [ -z "$uv" ]; then
  if [ ! -x .venv/bin/uv ]; then
    if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
    .venv/bin/pip install -q --disable-pip-version-check uv
  fi
  uv=.venv/bin/uv
fi

compile=("$uv" pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11 --python-platform linux
         --exclude-newer "$LOCK_DATE" --custom-compile-command "bash scripts/lock.sh")
mkdir -p requirements
"${compile[@]}" -o requirements/runtime.lock
"${compile[@]}" --extra test --constraint requirements/runtime.lock -o requirements/test.lock
echo "wrote requirements/runtime.lock ($(grep -c '==' requirements/runtime.lock) packages)" \
     "and requirements/test.lock ($(grep -c '==' requirements/test.lock) packages)"
