"""The OpenAPI 3.1 document: one entry per route (path + method) in OPERATIONS, built by
document() for the routes the app actually has, so /openapi.json, /docs and docs/openapi.json
never describe a route that is not served (tests/test_openapi.py checks both directions).

`python -m billingwatch.http.openapi_default` prints the document of the default app (docs/openapi.json).
"""

import json
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Route

from billingwatch import __version__
from billingwatch.levels import ALERT_SEVERITIES, PRIORITIES

Json = dict[str, Any]

# The asset files /docs loads; /docs/static/{name} serves these names and no other.
DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "docs.js", "favicon-32x32.png")


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(description: str, schema: Json) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str) -> Json:
    return json_body(description, ref("Error"))


def html(description: str) -> Json:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def html_or_json(description: str) -> Json:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}},
                                                    "application/json": {"schema": ref("Error")}}}


def query(name: str, description: str, schema: Json) -> Json:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


UNAUTHORISED: Json = {
    "description": "No valid bearer token (or, without BILLINGWATCH_API_TOKEN, not a direct loopback request); "
                   "with BILLINGWATCH_WEB_CONFIG_FILE users, no valid Basic sign-in or bearer token",
    "headers": {"WWW-Authenticate": {"description": 'Bearer, or Basic realm="BillingWatch" with a web config file',
                                     "schema": {"type": "string", "pattern": "^(Bearer|Basic )"}}},
    "content": {"application/json": {"schema": ref("Error")}},
}
STORE_DOWN = error("The store is unreachable, or too many requests are in flight; retry later")
BEARER: list[Json] = [{"bearer": []}]
LIMIT = query("limit", "How many records at most (capped by the log size)",
              {"type": "integer", "minimum": 1, "maximum": 999_999_999, "default": 100})
FORMAT = query("format", "csv: the same rows as an RFC 4180 download (one column per key; docs/sign-in.md#csv)",
               {"type": "string", "enum": ["json", "csv"], "default": "json"})


def listing_body(description: str, kind: str, item: str) -> Json:
    """The 200 of a listing: JSON, or with format=csv a CSV download of the same rows."""
    body = json_body(description, {"type": "object", "required": [kind],
                                   "properties": {kind: {"type": "array", "items": ref(item)}}})
    body["content"]["text/csv"] = {"schema": {"type": "string"}}
    body["headers"] = {"Content-Disposition": {
        "description": f'with format=csv: attachment; filename="billingwatch-{kind}-<UTC time>.csv"',
        "schema": {"type": "string"}}}
    return body

# Answers any route can give, from the middleware in front of every route (http/access.py, http/limits.py).
COMMON: dict[str, Json] = {
    "400": error("The Host header is not in BILLINGWATCH_ALLOWED_HOSTS"),
    "431": error("Request headers too large"),
    "503": error("Too many requests in flight; retry later"),
}

SCHEMAS: dict[str, Json] = {
    "Error": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {"type": "string", "description": "one line saying what was wrong"}},
    },
    "StripeEvent": {
        "type": "object",
        "description": "A Stripe event as Stripe signs and sends it (any API version); see Stripe's API reference. "
                       "Its envelope (these fields) is checked; a signed event whose data this version cannot "
                       "record is kept in the quarantine (200) for `billingwatch requeue`",
        "required": ["object", "id", "type", "created", "livemode"],
        "properties": {
            "object": {"const": "event"},
            "id": {"type": "string", "minLength": 1, "maxLength": 255, "examples": ["evt_1PqXYZ"]},
            "type": {"type": "string", "maxLength": 80, "pattern": "^[a-z0-9_]+(\\.[a-z0-9_]+){1,4}$",
                     "examples": ["charge.succeeded"]},
            "created": {"type": "integer", "minimum": 1, "maximum": 10**15, "description": "unix seconds"},
            "livemode": {"type": "boolean"},
            "data": {"description": "The object the event is about (data.object) and what changed"},
        },
    },
    "WebhookReceived": {
        "type": "object", "required": ["received", "duplicate", "anomalies"],
        "properties": {
            "received": {"type": "boolean", "const": True},
            "duplicate": {"type": "boolean", "description": "already recorded: nothing counted again"},
            "anomalies": {"type": "integer", "minimum": 0, "description": "anomalies this event raised"},
        },
    },
    "WebhookQuarantined": {
        "type": "object", "required": ["received", "quarantined", "reason"],
        "description": "A signed Stripe event this version cannot record, kept in the quarantine for "
                       "`billingwatch requeue`; nothing else counted",
        "properties": {
            "received": {"type": "boolean", "const": True},
            "quarantined": {"type": "boolean", "const": True},
            "reason": {"type": "string", "description": "why it could not be recorded"},
        },
    },
    "QuarantineEntry": {
        "type": "object", "required": ["id", "type", "created", "livemode", "received", "history", "reason"],
        "properties": {
            "id": {"type": "string"}, "type": {"type": "string"}, "created": {"type": "integer"},
            "livemode": {"type": "boolean"}, "received": {"type": "number", "description": "unix seconds"},
            "history": {"type": "boolean", "description": "it came as replayed history, not a live delivery"},
            "reason": {"type": "string"},
            "body": {"type": "string", "description": "the signed body as received (with ?body=true)"},
        },
    },
    "RequeueResult": {
        "type": "object", "required": ["recorded", "duplicates", "anomalies", "kept"],
        "properties": {
            "recorded": {"type": "integer", "minimum": 0, "description": "recorded now, and released"},
            "duplicates": {"type": "integer", "minimum": 0, "description": "recorded before, released"},
            "anomalies": {"type": "integer", "minimum": 0},
            "kept": {"type": "array", "description": "still unrecordable: left in the quarantine", "items": {
                "type": "object", "required": ["id", "type", "reason"],
                "properties": {"id": {"type": "string"}, "type": {"type": "string"}, "reason": {"type": "string"}}}},
        },
    },
    "ImportResult": {
        "type": "object", "required": ["lines", "recorded", "duplicate", "invalid", "anomalies", "errors"],
        "properties": {
            "lines": {"type": "integer", "minimum": 0, "description": "non-blank lines read"},
            "recorded": {"type": "integer", "minimum": 0, "description": "recorded now, as history"},
            "duplicate": {"type": "integer", "minimum": 0, "description": "recorded before: nothing changed"},
            "invalid": {"type": "integer", "minimum": 0, "description": "refused lines: each changed nothing"},
            "anomalies": {"type": "integer", "minimum": 0, "description": "history anomalies the recorded lines hit"},
            "errors": {"type": "array", "maxItems": 1000, "description": "the refused lines (the first 1,000)",
                       "items": {"type": "object", "required": ["line", "error"], "properties": {
                           "line": {"type": "integer", "minimum": 1}, "error": {"type": "string"}}}},
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "Ready": {
        "type": "object", "required": ["status", "store"],
        "properties": {"status": {"const": "ready"}, "store": ref("StoreKind")},
    },
    "NotReady": {
        "type": "object", "required": ["status", "store", "reason"],
        "properties": {"status": {"const": "unavailable"}, "store": ref("StoreKind"), "reason": {"type": "string"}},
    },
    "StoreKind": {"type": "string", "examples": ["redis", "memory"]},
    "Severity": {"type": "string", "enum": list(ALERT_SEVERITIES),
                 "description": "the monitoring mixins' severity (P1 critical, P2 and P3 warning, P4 info)"},
    "Priority": {"type": "string", "enum": list(PRIORITIES),
                 "description": "BillingWatch's finer level, P1 most urgent"},
    "Detector": {
        "type": "object",
        "required": ["name", "severity", "severities", "priority", "priorities", "description", "event_types",
                     "thresholds"],
        "properties": {
            "name": {"type": "string"},
            "severity": ref("Severity"),
            "severities": {"type": "array", "items": ref("Severity")},
            "priority": ref("Priority"),
            "priorities": {"type": "array", "items": ref("Priority"),
                           "description": "every priority its anomalies can carry (a grading detector has several)"},
            "description": {"type": "string"},
            "event_types": {"type": "array", "items": {"type": "string"}},
            "thresholds": {"type": "object", "description": "threshold name → value (see docs/detectors.md)"},
        },
    },
    "Anomaly": {
        "type": "object",
        "required": ["detector", "severity", "priority", "livemode", "event_id", "event_type", "event_created",
                     "summary"],
        "properties": {
            "detector": {"type": "string"},
            "severity": ref("Severity"),
            "priority": ref("Priority"),
            "livemode": {"type": "boolean"},
            "event_id": {"type": "string"},
            "event_type": {"type": "string"},
            "event_created": {"type": "integer", "description": "unix seconds"},
            "summary": {"type": "string"},
            "customer": {"type": "string"},
            "charge": {"type": "string"},
            "invoice": {"type": "string"},
            "subscription": {"type": "string"},
            "amount": {"type": "integer", "description": "minor units of `currency`"},
            "currency": {"type": "string"},
            "history": {"type": "boolean", "description": "found in imported history, not live traffic"},
            "account": {"type": "string", "description": "the Stripe Connect account; absent for the platform's own"},
            "related": {"type": "array", "items": {"type": "string"}, "description": "the other ids involved"},
            "details": {"type": "object", "description": "what else the detector reports"},
            "explorer": {"type": "string", "description": "the /events page filtered on this anomaly's customer"},
        },
    },
    "Event": {
        "type": "object",
        "description": "A line of the recent-events log; fields a rejected event lacks are null",
        "required": ["id", "type", "created", "received", "livemode", "customer", "object", "amount", "currency",
                     "result", "reason", "anomalies", "history"],
        "properties": {
            "id": {"type": ["string", "null"]},
            "type": {"type": ["string", "null"]},
            "created": {"type": ["integer", "null"], "description": "unix seconds (Stripe's)"},
            "received": {"type": "integer", "description": "unix seconds (this exporter's)"},
            "livemode": {"type": ["boolean", "null"]},
            "customer": {"type": ["string", "null"]},
            "object": {"type": ["string", "null"], "description": "the id of the event's object"},
            "amount": {"type": ["integer", "null"], "description": "minor units of `currency`"},
            "currency": {"type": ["string", "null"]},
            "result": {"type": "string", "description": "accepted, duplicate or rejected"},
            "reason": {"type": ["string", "null"], "description": "why a rejected event was refused"},
            "anomalies": {"type": "array", "items": {"type": "string"}, "description": "detectors it raised"},
            "history": {"type": "boolean"},
            "account": {"type": ["string", "null"],
                        "description": "the Stripe Connect account; null for the platform's own events"},
        },
    },
}


# A small event the exporter accepts: the reference page shows it, the fuzzer starts from it.
EXAMPLE_EVENT: Json = {
    "id": "evt_1QExample", "object": "event", "type": "charge.succeeded", "created": 1767225600,
    "livemode": False, "api_version": "2024-06-20",
    "data": {"object": {
        "id": "ch_3QExample", "object": "charge", "amount": 2000, "amount_captured": 2000, "amount_refunded": 0,
        "currency": "usd", "customer": "cus_QExample", "status": "succeeded", "paid": True, "captured": True,
        "refunded": False, "created": 1767225600, "livemode": False,
    }},
}


def account_webhook() -> Json:
    """One account's webhook target (BILLINGWATCH_ACCOUNTS_FILE): the same contract, its own secrets and store."""
    entry = webhook()
    entry["summary"] = "One account's webhook target (BILLINGWATCH_ACCOUNTS_FILE)"
    entry["parameters"] = [{"name": "account", "in": "path", "required": True,
                            "description": "Its name in BILLINGWATCH_ACCOUNTS_FILE (default without the file)",
                            "schema": {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"}},
                           *entry["parameters"]]
    entry["responses"] = {**entry["responses"],
                          "400": error(entry["responses"]["400"]["description"]
                                       + "; or signed with another account's secret (wrong_account)"),
                          "404": error("No account of that name")}
    return entry


def webhook() -> Json:
    return {
        "summary": "Stripe's webhook target",
        "description": "Verifies the signature, records the event atomically, and only then answers 200 "
                       "(a redelivery too, counted once). Every refusal records nothing.",
        "tags": ["ingest"],
        "parameters": [
            {"name": "Stripe-Signature", "in": "header", "required": False,
             "description": "Stripe's signature (t=...,v1=...); required unless signature verification is off",
             "schema": {"type": "string"}},
            {"name": "BillingWatch-Replay", "in": "header", "required": False,
             "description": "1: the event is replayed history, not a delivery; needs the bearer token "
                            "(or a direct loopback request when no token is set)",
             "schema": {"type": "string", "enum": ["1"]}},
        ],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": ref("StripeEvent"), "examples": {"charge.succeeded": {"value": EXAMPLE_EVENT}}}}},
        "responses": {
            "200": json_body("Recorded (or already recorded), or a signed event this version cannot record "
                             "kept in the quarantine", {"anyOf": [ref("WebhookReceived"), ref("WebhookQuarantined")]}),
            "400": error("Signature missing, malformed, wrong or too old; body not UTF-8 or JSON; no Stripe "
                         "event envelope (a signed one this version cannot record is quarantined: 200); a "
                         "livemode event with a placeholder secret; or a Host not allowed"),
            "403": error("BillingWatch-Replay without the bearer token"),
            "408": error("Body not received in time"),
            "413": error("Body larger than BILLINGWATCH_MAX_BODY_BYTES"),
            "415": error("Content-Type is not application/json (only while signature verification is off)"),
            "422": error("A signed body that is no Stripe event envelope the store cannot record (a signed "
                         "event envelope is quarantined instead)"),
            "503": error("Store unavailable, or too many requests in flight: Stripe retries"),
        },
    }


def detector_parameter(names: Sequence[str]) -> Json:
    schema: Json = {"type": "string"}
    if names:
        schema["enum"] = list(names)
    return query("detector", "Only this detector's records", schema)


def operations(detector_names: Sequence[str]) -> dict[tuple[str, str], Json]:
    """Every operation the exporter can serve, by (path, method); document() keeps those the app has."""
    # Printable ASCII: what Stripe types and ids are made of (the exporter refuses control characters).
    text_filter = {"type": "string", "maxLength": 255, "pattern": "^[ -~]*$"}
    # /api/events and /events take the same query; an empty value is no filter (an HTML form sends
    # its empty fields), so the numbers may be empty too.
    empty = {"type": "string", "maxLength": 0}
    event_filters = [
        query("type", "Only events of this Stripe type", {**text_filter, "maxLength": 80}),
        query("customer", "Only this customer's events", text_filter),
        query("object", "Only events about this object id", text_filter),
        query("since", "Only events received at or after this unix time (seconds)",
              {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 999_999_999_999}, empty]}),
        {**LIMIT, "schema": {"anyOf": [LIMIT["schema"], empty]}},
    ]
    html_unauthorised = {**UNAUTHORISED, "content": {"text/html": {"schema": {"type": "string"}}}}
    anomaly_filters = [
        query("detector", "Only this detector's anomalies",
              {"anyOf": [{"type": "string", "enum": list(detector_names)}, empty]} if detector_names
              else {"type": "string"}),
        query("severity", "Only this severity", {"type": "string", "enum": ["", *ALERT_SEVERITIES]}),
        query("priority", "Only this priority", {"type": "string", "enum": ["", *PRIORITIES]}),
        query("livemode", "Only live (true) or test (false) ones", {"type": "string", "enum": ["", "true", "false"]}),
        query("customer", "Only this customer's", text_filter),
        query("range", "The last hour, day or week (default 7d; not used with from/to)",
              {"type": "string", "enum": ["", "1h", "24h", "7d"]}),
        query("from", "From this ISO 8601 date or datetime (Stripe event time)",
              {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}, empty]}),
        query("to", "Until this ISO 8601 date (its whole day) or datetime",
              {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}, empty]}),
        query("cursor", "The next page's cursor, from the previous page's link",
              {"anyOf": [{"type": "string", "pattern": "^[a-z][a-z0-9_]{0,47}-[0-9a-f]{16}$"}, empty]}),
    ]
    anomaly_param = {"name": "anomaly", "in": "path", "required": True, "description": "The anomaly's stable id",
                     "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,47}-[0-9a-f]{16}$"}}
    return {
        ("/", "get"): {
            "summary": "Status page: secret, store, events, scrapes, alert push, anomalies; the next step (HTML)",
            "tags": ["pages"], "security": BEARER,
            "responses": {"200": html("The status page"), "401": html_unauthorised},
        },
        ("/webhooks/stripe", "post"): webhook(),
        ("/webhooks/stripe/{account}", "post"): account_webhook(),
        ("/metrics", "get"): {
            "summary": "Prometheus exposition", "tags": ["monitoring"],
            "description": "Text format; OpenMetrics when the Accept header asks for it. No ids, aggregates only.",
            "responses": {"200": {"description": "The billingwatch_* families and the process collectors",
                                  "content": {"text/plain": {"schema": {"type": "string"}},
                                              "application/openmetrics-text": {"schema": {"type": "string"}}}}},
        },
        ("/health", "get"): {"summary": "Liveness: 200 while the process runs", "tags": ["monitoring"],
                             "responses": {"200": json_body("Alive", ref("Health"))}},
        ("/ready", "get"): {
            "summary": "Readiness: this replica can record an event", "tags": ["monitoring"],
            "responses": {"200": json_body("Ready", ref("Ready")),
                          "503": json_body("Not ready, with the reason (or too many requests in flight)",
                                           {"anyOf": [ref("NotReady"), ref("Error")]})},
        },
        ("/api/detectors", "get"): {
            "summary": "The registered detectors, their severities and thresholds", "tags": ["api"],
            "security": BEARER,
            "responses": {"200": json_body("The detectors", {
                "type": "object", "required": ["detectors"],
                "properties": {"detectors": {"type": "array", "items": ref("Detector")}}}),
                "401": UNAUTHORISED},
        },
        ("/api/anomalies", "get"): {
            "summary": "Recent anomaly records, newest first", "tags": ["api"], "security": BEARER,
            "parameters": [
                LIMIT,
                detector_parameter(detector_names),
                query("history", "true: only those found in imported history; false: only live ones",
                      {"type": "string", "enum": ["true", "false"]}),
                FORMAT,
            ],
            "responses": {"200": listing_body("The anomaly records", "anomalies", "Anomaly"),
                "400": error("A bad parameter (or a Host not allowed)"), "401": UNAUTHORISED, "503": STORE_DOWN},
        },
        ("/api/events", "get"): {
            "summary": "The recent-events log, newest first", "tags": ["api"], "security": BEARER,
            "parameters": [*event_filters, FORMAT],
            "responses": {"200": listing_body("The log lines", "events", "Event"),
                "400": error("A bad parameter (or a Host not allowed)"), "401": UNAUTHORISED, "503": STORE_DOWN},
        },
        ("/api/quarantine", "get"): {
            "summary": "The quarantine: signed events this version could not record, oldest first", "tags": ["api"],
            "security": BEARER,
            "parameters": [
                {**LIMIT, "description": "How many entries at most (capped by BILLINGWATCH_QUARANTINE_SIZE)"},
                query("body", "true: each entry with the signed body as received",
                      {"type": "string", "enum": ["true", "false"]}),
            ],
            "responses": {"200": json_body("The entries", {
                "type": "object", "required": ["quarantine"],
                "properties": {"quarantine": {"type": "array", "items": ref("QuarantineEntry")}}}),
                "400": error("A bad parameter (or a Host not allowed)"), "401": UNAUTHORISED, "503": STORE_DOWN},
        },
        ("/api/import", "post"): {
            "summary": "Record Stripe events as history: NDJSON, one event per line (what `billingwatch replay` sends)",
            "description": "Each line is recorded as `replay --direct` records it (state and the history "
                           "families, no live counter), or refused with its line number and reason, changing "
                           "nothing for that line. 200 only when every accepted line is recorded; 503: send the "
                           "whole chunk again (recorded lines come back duplicates). At most 4 MiB per request.",
            "tags": ["api"], "security": BEARER,
            # No type: on the wire it is text whatever it holds, and every line is judged on its own.
            "requestBody": {"required": True, "content": {"application/x-ndjson": {"schema": {
                "description": "Stripe event objects, one JSON object per line; any other line is listed "
                               "in `errors` with its reason"}}}},
            "responses": {"200": json_body("What became of the lines", ref("ImportResult")),
                          "400": error("The body could not be read (or a Host not allowed)"),
                          "401": UNAUTHORISED, "408": error("The body did not arrive within the read timeout"),
                          "413": error("The body is larger than 4 MiB: send fewer lines per request"),
                          "415": error("Content-Type is not application/x-ndjson"), "503": STORE_DOWN},
        },
        ("/api/quarantine/requeue", "post"): {
            "summary": "Re-record quarantined events (oldest first) through the normal path, each once",
            "description": "What `billingwatch requeue` calls after an upgrade. Recorded ones leave the "
                           "quarantine; those still unrecordable stay and are listed in `kept`.",
            "tags": ["api"], "security": BEARER,
            "parameters": [{**LIMIT, "description": "How many entries at most, oldest first (default: all)",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 999_999_999}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "maxProperties": 0, "description": "{}: the parameters are in the query"}}}},
            "responses": {"200": json_body("What became of them", ref("RequeueResult")),
                          "400": error("A bad parameter (or a Host not allowed)"), "401": UNAUTHORISED,
                          "415": error("Content-Type is not application/json"), "503": STORE_DOWN},
        },
        ("/events", "get"): {
            "summary": "Event explorer: the recent events with their anomalies (HTML)", "tags": ["pages"],
            "security": BEARER, "parameters": event_filters,
            "responses": {
                "200": html("The explorer page"),
                "400": {"description": "The page saying which filter is bad (or a Host not allowed, in JSON)",
                        "content": {"text/html": {"schema": {"type": "string"}},
                                    "application/json": {"schema": ref("Error")}}},
                "401": {**UNAUTHORISED, "content": {"text/html": {"schema": {"type": "string"}}}},
                "503": {"description": "Store unavailable (or too many requests in flight, in JSON)",
                        "content": {"text/html": {"schema": {"type": "string"}},
                                    "application/json": {"schema": ref("Error")}}},
            },
        },
        ("/anomalies", "get"): {
            "summary": "The anomalies, newest first, filtered, a page at a time (HTML)", "tags": ["pages"],
            "security": BEARER, "parameters": anomaly_filters,
            "responses": {
                "200": html("The list page"),
                "400": html_or_json("The page saying which filter is bad (or a Host not allowed, in JSON)"),
                "401": html_unauthorised,
                "410": html("The cursor's anomaly has left the log: start again from the newest"),
                "503": html_or_json("Store unavailable (or too many requests in flight, in JSON)"),
            },
        },
        ("/anomalies/{anomaly}", "get"): {
            "summary": "One anomaly: who, how much, its events, Stripe Dashboard links, rule, runbook, verdict (HTML)",
            "tags": ["pages"], "security": BEARER, "parameters": [anomaly_param],
            "responses": {
                "200": html("The anomaly's page"),
                "401": html_unauthorised,
                "404": html("No anomaly with this id in the log"),
                "503": html_or_json("Store unavailable (or too many requests in flight, in JSON)"),
            },
        },
        ("/anomalies/{anomaly}/feedback", "post"): {
            "summary": "A person's verdict on an anomaly (the page's form; same-origin browsers only)",
            "tags": ["pages"], "security": BEARER, "parameters": [anomaly_param],
            "description": "Taken only when Sec-Fetch-Site is same-origin or, without it, Origin is this host "
                           "(cross-site request forgery). A later verdict replaces the earlier one.",
            "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                "type": "object", "required": ["verdict"],
                "properties": {"verdict": {"type": "string", "enum": ["expected", "false_positive"]}}}}}},
            "responses": {
                "303": {"description": "Stored: back to the anomaly's page",
                        "headers": {"Location": {"schema": {"type": "string"}}}},
                "400": html_or_json("Not a verdict (or a Host not allowed, in JSON)"),
                "401": html_unauthorised,
                "403": html("Not from a page of this site"),
                "404": html("No anomaly with this id in the log"),
                "413": html_or_json("Form too large"),
                "503": html_or_json("Store unavailable (or too many requests in flight, in JSON)"),
                "507": html("Too many anomalies have a verdict already (a new one is refused)"),
            },
        },
        ("/static/pages.css", "get"): {
            "summary": "The pages' stylesheet", "tags": ["pages"],
            "responses": {"200": {"description": "CSS", "content": {"text/css": {"schema": {"type": "string"}}}}},
        },
        ("/openapi.json", "get"): {
            "summary": "This document", "tags": ["docs"],
            "responses": {"200": json_body("The OpenAPI 3.1 document", {"type": "object"})},
        },
        ("/docs", "get"): {"summary": "API reference rendering this document (Swagger UI, self-hosted)",
                           "tags": ["docs"], "responses": {"200": html("The API reference page")}},
        ("/docs/static/{name}", "get"): {
            "summary": "The API reference page's assets", "tags": ["docs"],
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": list(DOCS_ASSETS)}}],
            "responses": {
                "200": {"description": "The asset",
                        "content": {"text/javascript": {"schema": {"type": "string"}},
                                    "text/css": {"schema": {"type": "string"}},
                                    "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}}},
                "404": error("No such asset"),
            },
        },
    }


def route_operations(routes: Iterable[BaseRoute]) -> list[tuple[str, str]]:
    """(path, method) of every route; HEAD is implied by GET, as Starlette serves it."""
    found = []
    for route in routes:
        if isinstance(route, Route):
            found += [(route.path, m.lower()) for m in sorted(route.methods or ()) if m != "HEAD"]
    return found


def document(routes: Iterable[BaseRoute], detector_names: Sequence[str] = ()) -> Json:
    """The document for these routes; a route without an entry in operations() is left out
    (the drift test fails on it)."""
    known = operations(detector_names)
    paths: dict[str, Json] = {}
    for path, method in route_operations(routes):
        if (path, method) in known:
            operation = known[path, method]
            operation["responses"] = {**COMMON, **operation["responses"]}
            paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "BillingWatch",
            "version": __version__,
            "description": "Self-hosted monitoring of Stripe billing. /api/* and /events hold customer ids: "
                           "they need `Authorization: Bearer <BILLINGWATCH_API_TOKEN>` (without a token, only "
                           "direct loopback requests are served). With BILLINGWATCH_WEB_CONFIG_FILE users, every "
                           "route but POST /webhooks/stripe, /health and /ready needs HTTP Basic sign-in or the "
                           "bearer token. Errors are one line: {\"error\": reason}.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {"name": "ingest", "description": "Stripe's webhook deliveries"},
            {"name": "monitoring", "description": "Prometheus, liveness and readiness; no customer data"},
            {"name": "api", "description": "Customer data: the bearer token"},
            {"name": "pages", "description": "HTML for people"},
            {"name": "docs", "description": "This document and its reference page"},
        ],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "BILLINGWATCH_API_TOKEN"}},
        },
    }


def render(doc: Json) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
