"""The OpenAPI document is the contract: it describes exactly the app's routes, the committed
docs/openapi.json is current, /docs renders it from this host only, and schemathesis finds no
response of a live exporter (both stores) that breaks it."""

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from billingwatch.detectors import build_detectors
from billingwatch.fixtures import stripe_events as se
from billingwatch.http import apidocs, openapi, openapi_default
from billingwatch.http.app import create_app
from billingwatch.store import MemoryStore
from testkit.processes import RedisServer
from tests.conftest import ROOT, SECRET, running_exporter, settings
from tests.metrics import scrape, value

TOKEN = "test-api-token-for-the-fuzzer"
SCHEMATHESIS_CONFIG = ROOT / "tests" / "schemathesis.toml"
# Described in http/openapi.py for the events log work (issue 13), merged separately: an entry
# may wait for its route, never the other way round. Empty once both are in the route table.
AWAITING: set[tuple[str, str]] = set()  # documented operations whose route is not merged yet


def app_operations(**overrides: Any) -> set[tuple[str, str]]:
    return set(openapi.route_operations(create_app(settings(**overrides), MemoryStore()).routes))


def test_document_describes_every_route_of_the_app_and_nothing_else() -> None:
    routes = app_operations()
    doc = openapi_default.default_document()
    described = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert described == routes
    assert {("/webhooks/stripe", "post"), ("/api/anomalies", "get"), ("/openapi.json", "get"),
            ("/docs", "get")} <= routes
    # Every entry of the registry is a route the app has, or one whose route is on its way.
    assert set(openapi.operations([])) - routes <= AWAITING


def test_a_route_without_an_entry_is_left_out_so_the_drift_test_fails() -> None:
    from starlette.routing import Route

    async def nothing() -> None:  # never called
        raise AssertionError

    extra = Route("/undocumented", nothing)
    doc = openapi.document([*create_app(settings(), MemoryStore()).routes, extra])
    assert "/undocumented" not in doc["paths"] and "/health" in doc["paths"]


def test_committed_docs_openapi_json_is_current() -> None:
    committed = (ROOT / "docs" / "openapi.json").read_text()
    assert committed == openapi.render(openapi_default.default_document()), (
        "docs/openapi.json is stale: python -m billingwatch.http.openapi_default > docs/openapi.json"
    )


def test_document_states_auth_headers_and_error_bodies() -> None:
    doc = openapi_default.default_document()
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer", "description": "BILLINGWATCH_API_TOKEN"}}
    for path, item in doc["paths"].items():
        for operation in item.values():
            needs_token = path.startswith(("/api/", "/anomalies")) or path in ("/events", "/")
            assert (operation.get("security") == [{"bearer": []}]) is needs_token, path
            assert ("401" in operation["responses"]) is needs_token, path
    webhook = doc["paths"]["/webhooks/stripe"]["post"]
    assert {p["name"] for p in webhook["parameters"]} == {"Stripe-Signature", "BillingWatch-Replay"}
    assert set(webhook["responses"]) >= {"200", "400", "403", "408", "413", "415", "422", "503"}
    assert webhook["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/StripeEvent"}
    # The envelope: a signed one whose data this version cannot record is quarantined (200), not refused.
    assert doc["components"]["schemas"]["StripeEvent"]["required"] == ["object", "id", "type", "created", "livemode"]
    anomalies = doc["paths"]["/api/anomalies"]["get"]
    assert {p["name"] for p in anomalies["parameters"]} == {"limit", "detector", "history", "format"}
    detector = next(p for p in anomalies["parameters"] if p["name"] == "detector")
    assert detector["schema"]["enum"] == [d.name for d in build_detectors({})]
    assert doc["paths"]["/ready"]["get"]["responses"]["503"]


def test_openapi_json_is_the_document_of_the_serving_app(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    served = client.get("/openapi.json").json()
    assert served == openapi_default.default_document()


def test_docs_and_openapi_need_no_token_but_the_host_allowlist_applies(
        make_client: Callable[..., TestClient]) -> None:
    client = make_client(peer="203.0.113.9", api_token=TOKEN)  # not loopback, no token sent
    assert client.get("/api/anomalies").status_code == 401
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/docs/static/swagger-ui.css").status_code == 200
    foreign = client.get("/openapi.json", headers={"Host": "attacker.example"})
    assert foreign.status_code == 400 and "Host" in foreign.json()["error"]


def test_docs_page_is_self_hosted_under_a_strict_csp(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    page = client.get("/docs")
    assert page.headers["content-type"].startswith("text/html")
    csp = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["img-src"] == "'self' data:" and csp["connect-src"] == "'self'"
    assert "<script>" not in page.text  # no inline script: the CSP would block it
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(not re.match(r"[a-z]+:|//", s) for s in sources), sources
    assert "openapi.json" in sources
    for source in (s for s in sources if s.startswith("docs/static/")):
        asset = client.get("/" + source)
        assert asset.status_code == 200, source
        assert asset.headers["x-content-type-options"] == "nosniff"
    assert "SwaggerUIBundle" in client.get("/docs/static/swagger-ui-bundle.js").text
    assert "validatorUrl: null" in client.get("/docs/static/docs.js").text  # no badge from an outside validator
    missing = client.get("/docs/static/oauth2-redirect.html")  # in the package, not served
    assert missing.status_code == 404 and missing.json() == {"error": "no such asset"}


def test_docs_assets_are_the_ones_the_document_lists() -> None:
    assert set(apidocs.asset_paths()) == set(openapi.DOCS_ASSETS)
    assert all(path.is_file() for path in apidocs.asset_paths().values())


def seed(url: str) -> None:
    """A duplicate charge (an anomaly) and a redelivery, so the API answers carry real records."""
    now = int(time.time())
    first = se.event("charge.succeeded", se.charge(charge_id="ch_fuzz_one"), created=now - 60)
    second = se.event("charge.succeeded", se.charge(charge_id="ch_fuzz_two"), created=now)
    for evt in (first, second, first):
        payload = se.body(evt)
        assert httpx.post(url + "/webhooks/stripe", content=payload, headers=se.signed_headers(payload, SECRET),
                          timeout=10).status_code == 200


def schemathesis(url: str, cwd: Path, *extra: str, env: dict[str, str] | None = None,
                 ) -> subprocess.CompletedProcess[str]:
    # Bounded: 20 examples per operation and phase. The webhook rejects the fuzzer's unsigned
    # bodies with 400, a documented answer (tests/schemathesis.toml).
    command = [str(Path(sys.executable).parent / "st"), "--config-file", str(SCHEMATHESIS_CONFIG), "--no-color",
               "run", url + "/openapi.json", "--checks", "all", "--max-examples", "20", "--workers", "1",
               "--request-timeout", "10", *extra]
    environ = {k: v for k, v in os.environ.items() if k not in ("SCHEMATHESIS_HOOKS", "BILLINGWATCH_FUZZ_SECRET")}
    environ |= {"PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env=environ)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_schemathesis_finds_nothing_against_a_live_exporter(kind: str, request: pytest.FixtureRequest,
                                                             tmp_path: Path) -> None:
    env = {"BILLINGWATCH_API_TOKEN": TOKEN}
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        env |= {"REDIS_URL": server.url, "BILLINGWATCH_REDIS_PREFIX": request.getfixturevalue("redis_prefix")}
    with running_exporter(**env) as exporter:
        seed(exporter.url)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        # With the token: every check, including ignored_auth (the same requests without it must get
        # 401), and webhook bodies signed (tests/schemathesis_hooks.py) so they reach the parser and the store.
        with_token = schemathesis(exporter.url, tmp_path, "--header", f"Authorization: Bearer {TOKEN}",
                                  "--report", "junit", "--report-junit-path", str(tmp_path / "with-token.xml"),
                                  env={"SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
                                       "BILLINGWATCH_FUZZ_SECRET": SECRET})
        assert with_token.returncode == 0, with_token.stdout[-6000:] + with_token.stderr[-2000:]
        # Without it: /api/* answer 401 as documented; webhook bodies unsigned (the hooks only encode
        # /api/import's NDJSON bodies without BILLINGWATCH_FUZZ_SECRET).
        without = schemathesis(exporter.url, tmp_path, "--report", "junit",
                               "--report-junit-path", str(tmp_path / "without-token.xml"),
                               env={"SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks"})
        assert without.returncode == 0, without.stdout[-6000:] + without.stderr[-2000:]
        for report in ("with-token.xml", "without-token.xml"):  # it did test the operations
            tested = set(re.findall(r'testcase name="([^"]+)"', (tmp_path / report).read_text()))
            assert {"POST /webhooks/stripe", "POST /api/import", "GET /api/anomalies", "GET /api/detectors",
                    "GET /metrics", "GET /docs"} <= tested, tested
        # Still serving, the seeded anomaly still there, and the exposition still parses after
        # whatever signed events the fuzzer got recorded.
        records = httpx.get(exporter.url + "/api/anomalies", headers=auth, timeout=10).json()["anomalies"]
        assert "ch_fuzz_two" in [r.get("charge") for r in records]
        samples = scrape(exporter.url)
        assert value(samples, "billingwatch_webhook_requests_total", result="accepted") >= 2
        assert value(samples, "billingwatch_webhook_requests_total", result="missing_signature") > 0
        assert value(samples, "billingwatch_webhook_requests_total", result="invalid_event") > 0  # signed, refused
        # Signed envelopes this version cannot record: kept, and listed.
        assert value(samples, "billingwatch_webhook_requests_total", result="quarantined") > 0
        assert httpx.get(exporter.url + "/api/quarantine", headers=auth, timeout=10).json()["quarantine"]
