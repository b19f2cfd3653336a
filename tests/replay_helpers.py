"""Helpers for the command tests: write JSON Lines, deliver live over HTTP, run the command."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from billingwatch.fixtures import stripe_events as se
from tests.conftest import ROOT, SECRET


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def deliver_live(base_url: str, events: list[dict[str, Any]]) -> None:
    for evt in events:
        payload = se.body(evt)
        response = httpx.post(base_url + "/webhooks/stripe", content=payload,
                              headers=se.signed_headers(payload, SECRET))
        assert response.status_code == 200, response.text


def _env(env: dict[str, str] | None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    base.update({"STRIPE_WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(ROOT)})
    base.update(env or {})
    return base


def billingwatch(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, in its own process."""
    return subprocess.run([sys.executable, "-m", "billingwatch", *args], env=_env(env), input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def billingwatch_process(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The command started in its own process, for a test to act while it runs."""
    return subprocess.Popen([sys.executable, "-m", "billingwatch", *args], env=_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def summary_counts(stdout: str) -> dict[str, int]:
    """accepted, duplicate, rejected, failed from the summary line (`replay: N events: ...`)."""
    found = re.search(r"(\d+) accepted, (\d+) duplicate, (\d+) rejected, (\d+) failed", stdout)
    assert found, stdout
    return dict(zip(("accepted", "duplicate", "rejected", "failed"), map(int, found.groups()), strict=True))
