"""`billingwatch requeue`: after an upgrade, record the events the quarantine kept, each once.

The running exporter does the work (POST /api/quarantine/requeue), so the events are recorded
with its detectors, plugins and settings through its one Recorder, and the command works with
either store: the in-process one cannot be reached from another process.
"""

import argparse
import sys
from typing import Any

import httpx

from billingwatch.config import ConfigError, from_env

DEFAULT_EXPORTER = "http://127.0.0.1:9786"


def add_requeue(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser(
        "requeue", help="record the quarantined events (signed events an earlier version could not record)",
        description="Ask the running exporter to record the events in its quarantine through the normal path, "
        "oldest first, each exactly once, and remove them. Those it still cannot record stay, and are listed. "
        "Exit status 0 when none stay, 1 when some do or the exporter cannot be asked.",
    )
    parser.add_argument("--url", default=DEFAULT_EXPORTER,
                        help=f"the exporter's address (default {DEFAULT_EXPORTER}); BILLINGWATCH_API_TOKEN "
                        "(or _FILE) is sent as the bearer token")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the exporter to finish (default 600)")
    parser.set_defaults(run=requeue)


def requeue(args: argparse.Namespace) -> int:
    if not str(args.url).startswith(("http://", "https://")):
        raise ConfigError("--url must start with http:// or https://")
    if not 1 <= args.timeout <= 86400:
        raise ConfigError("--timeout must be between 1 and 86400 seconds")
    token = from_env().api_token
    headers = {"authorization": f"Bearer {token}"} if token else {}
    url = str(args.url).rstrip("/") + "/api/quarantine/requeue"
    try:
        response = httpx.post(url, json={}, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"billingwatch requeue: {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    result = _result(response)
    if isinstance(result, str):
        print(f"billingwatch requeue: {url}: {result}", file=sys.stderr)
        return 1
    for kept in result["kept"]:
        print(f"still quarantined: {kept.get('id')} ({kept.get('type')}): {kept.get('reason')}")
    print(f"requeue: {result['recorded']} recorded ({result['anomalies']} anomalies), {result['duplicates']} "
          f"recorded before, {len(result['kept'])} still quarantined")
    return 1 if result["kept"] else 0


def _result(response: httpx.Response) -> dict[str, Any] | str:
    """The exporter's answer, or a one-line reason it is not one."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}, not JSON"
    if response.status_code != 200:
        error = body.get("error") if isinstance(body, dict) else None
        return f"HTTP {response.status_code}: {str(error)[:300]}"
    if not isinstance(body, dict) or not isinstance(body.get("kept"), list) or not all(
            isinstance(body.get(k), int) for k in ("recorded", "duplicates", "anomalies")):
        return "not a requeue result"
    return body
