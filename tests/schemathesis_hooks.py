"""schemathesis hooks (SCHEMATHESIS_HOOKS=tests.schemathesis_hooks): with BILLINGWATCH_FUZZ_SECRET
set, each generated webhook body is sent signed with it, so the fuzzer's events get past the
signature check to parsing, planning and the store instead of stopping at 400. POST /api/import's
NDJSON bodies go as the generated text."""

import json
import os
from typing import Any

import schemathesis

from billingwatch.fixtures import stripe_events as se


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    secret = os.environ.get("BILLINGWATCH_FUZZ_SECRET")
    if not secret or case.operation.path != "/webhooks/stripe":
        return
    meta = case._meta  # schemathesis' record of which parts it made invalid on purpose
    if meta is not None and any(str(location.value) == "header" and not info.mode.is_positive
                                for location, info in meta.components.items()):
        return  # the fault is in the headers (the signature among them): send them as generated
    try:
        # The bytes the requests transport sends for a JSON body (json=...): those are the bytes signed.
        payload = json.dumps(case.body, allow_nan=False).encode()
    except (TypeError, ValueError):  # no body (schemathesis' NotSet), NaN: sent unsigned
        return
    case.headers = {**(case.headers or {}), "Stripe-Signature": se.sign(payload, secret)}
    # The signature is not what makes a case valid or not: keep schemathesis' judgement of the
    # generated case (it would otherwise re-judge the headers, the token among them).
    case._record_starting_state()


@schemathesis.serializer("application/x-ndjson")
def ndjson(context: Any, value: Any) -> bytes | None:
    """POST /api/import's body: the generated string as it is (each of its lines is one event)."""
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else json.dumps(value).encode()
