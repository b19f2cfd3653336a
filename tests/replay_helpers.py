"""Helpers for the command tests: write JSON Lines, deliver live over HTTP, run the command."""

import json
import os
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


def billingwatch(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, in its own process."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    base.update({"STRIPE_WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(ROOT)})
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "billingwatch", *args], env=base, input=stdin,
                          capture_output=True, text=True, timeout=timeout)
