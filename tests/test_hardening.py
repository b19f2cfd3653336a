"""Issue 11, in process: malformed signature headers, future timestamps, placeholder secrets,
insecure mode's Content-Type, the API's limit and /metrics' Accept, bounded settings, log escaping."""

import logging
import re
import time
from collections.abc import Callable

import httpx
import pytest
from starlette.testclient import TestClient

from billingwatch.config import ConfigError, from_env
from billingwatch.fixtures import stripe_events as se
from billingwatch.logsafe import safe
from billingwatch.startup import check_settings
from tests.conftest import ROOT, SECRET
from tests.metrics import scrape, store_figures, value
from tests.test_serve import run_cli

Client = Callable[..., TestClient]
URL = "/webhooks/stripe"
PLACEHOLDER = "whsec_replace_me"  # the one in .env.example and the README quick start


def rejected(client: TestClient, response: httpx.Response, status: int, result: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and "\n" not in error
    assert value(scrape(client), "billingwatch_webhook_requests_total", result=result) == 1


@pytest.mark.parametrize("header", [
    b"t=1,v1=\xe9",                       # the SDK raised TypeError: a 500 before the fix
    b"t=\xff\xfe,v1=abc",
    b"t=1,v1=" + b"a" * 64 + b"\x00",
    b"t=1," + b"v1=a," * 400,             # over the 1 KiB a real header never reaches
])
def test_malformed_signature_header_is_a_counted_400(make_client: Client, header: bytes) -> None:
    client = make_client()
    payload = se.body(se.event("charge.succeeded", se.charge()))
    header = header.replace(b"t=1,", f"t={int(time.time())},".encode())
    before = store_figures(scrape(client))
    response = client.post(URL, content=payload, headers=[(b"stripe-signature", header),
                                                          (b"content-type", b"application/json")])
    rejected(client, response, 400, "invalid_signature")
    assert store_figures(scrape(client)) == before


@pytest.mark.parametrize("ahead", [10**9, 301 + 60])
def test_signature_timestamp_in_the_future_is_rejected(make_client: Client, ahead: int) -> None:
    client = make_client()
    payload = se.body(se.event("charge.succeeded", se.charge()))
    response = client.post(URL, content=payload,
                           headers=se.signed_headers(payload, SECRET, timestamp=int(time.time()) + ahead))
    rejected(client, response, 400, "invalid_signature")
    assert "future" in response.json()["error"]


def test_signature_a_little_ahead_is_clock_skew_and_accepted(make_client: Client) -> None:
    client = make_client()
    payload = se.body(se.event("charge.succeeded", se.charge()))
    response = client.post(URL, content=payload,
                           headers=se.signed_headers(payload, SECRET, timestamp=int(time.time()) + 30))
    assert response.status_code == 200, response.text


def test_the_readmes_placeholder_livemode_answer_is_what_the_exporter_answers(make_client: Client) -> None:
    """README's quick start: with a placeholder secret a livemode event is refused with 400, a
    one-line reason in the body, and counted under the result it names."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    stated = re.search(r'livemode events are refused \(400, a one-line reason, counted as `result="(\w+)"`\)', readme)
    assert stated, "README no longer states the placeholder secret's livemode answer"
    client = make_client(webhook_secrets=(PLACEHOLDER,))
    live = se.body(se.event("charge.succeeded", se.charge(livemode=True), livemode=True))
    response = client.post(URL, content=live, headers=se.signed_headers(live, PLACEHOLDER))
    assert response.status_code == 400
    assert list(response.json()) == ["error"] and "\n" not in response.json()["error"]
    assert "livemode" in response.json()["error"] and "placeholder" in response.json()["error"]
    assert value(scrape(client), "billingwatch_webhook_requests_total", result=stated[1]) == 1


def test_placeholder_secret_accepts_test_mode_and_refuses_livemode(
    make_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="billingwatch"):
        client = make_client(webhook_secrets=(PLACEHOLDER,))
    assert any("placeholder" in r.getMessage() and "test mode only" in r.getMessage() for r in caplog.records)
    live = se.body(se.event("charge.succeeded", se.charge(livemode=True), livemode=True))
    before = store_figures(scrape(client))
    response = client.post(URL, content=live, headers=se.signed_headers(live, PLACEHOLDER))
    rejected(client, response, 400, "livemode_rejected")
    assert store_figures(scrape(client)) == before
    test_mode = se.body(se.event("charge.succeeded", se.charge()))
    assert client.post(URL, content=test_mode, headers=se.signed_headers(test_mode, PLACEHOLDER)).status_code == 200


def test_real_secret_next_to_a_placeholder_still_accepts_livemode(make_client: Client) -> None:
    client = make_client(webhook_secrets=(PLACEHOLDER, SECRET))
    live = se.body(se.event("charge.succeeded", se.charge(livemode=True), livemode=True))
    assert client.post(URL, content=live, headers=se.signed_headers(live, SECRET)).status_code == 200


@pytest.mark.parametrize("secret", ["whsec_replace_me", "changeme", "whsec_changeme", "replace_me",
                                    "whsec_your_secret_here"])
def test_known_placeholders_are_recognised(secret: str) -> None:
    from billingwatch.config import is_placeholder

    assert is_placeholder(secret)
    assert not is_placeholder(SECRET) and not is_placeholder("whsec_4eC39HqLyjWDarjtT1zdp7dc")


def test_insecure_mode_refuses_a_non_json_content_type(make_client: Client) -> None:
    client = make_client(webhook_secrets=(), insecure_skip_signature=True)
    payload = se.body(se.event("charge.succeeded", se.charge()))
    before = store_figures(scrape(client))
    # What a web page can send cross-site without a preflight: text/plain, form encodings, nothing.
    for i, content_type in enumerate(["text/plain", "application/x-www-form-urlencoded", None], start=1):
        headers = {"Content-Type": content_type} if content_type else {}
        response = client.post(URL, content=payload, headers=headers)
        assert response.status_code == 415, response.text
        assert value(scrape(client), "billingwatch_webhook_requests_total", result="unsupported_media_type") == i
    assert store_figures(scrape(client)) == before
    ok = client.post(URL, content=payload, headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


@pytest.mark.parametrize("limit", ["%C2%B2", "1" * 5000, "%D9%A3", "1%0A", "-1", "0", "1e3", "+5"])
def test_api_anomalies_limit_must_be_ascii_digits(make_client: Client, limit: str) -> None:
    response = make_client().get("/api/anomalies?limit=" + limit)
    assert response.status_code == 400
    assert response.json() == {"error": "limit must be a positive integer"}


def test_metrics_with_a_malformed_openmetrics_accept_falls_back_to_text(make_client: Client) -> None:
    response = make_client().get("/metrics", headers={"Accept": "application/openmetrics-text; version=abc"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "billingwatch_webhook_requests_total" in response.text


@pytest.mark.parametrize(("env", "message"), [
    ({"BILLINGWATCH_SUBSCRIPTION_TTL_SECONDS": str(10**15)}, "at most 315360000"),
    ({"BILLINGWATCH_DEDUP_TTL_SECONDS": "9" * 40}, "must be an integer"),
    ({"BILLINGWATCH_SIGNATURE_TOLERANCE_SECONDS": "0"}, "at least 1"),
    ({"BILLINGWATCH_SIGNATURE_TOLERANCE_SECONDS": "86400"}, "at most 3600"),
    ({"BILLINGWATCH_MAX_BODY_BYTES": str(2**40)}, "at most"),
    ({"BILLINGWATCH_PORT": "70000"}, "at most 65535"),
    ({"BILLINGWATCH_PORT": "\u0661\u0662"}, "must be an integer"),
    ({"BILLINGWATCH_ANOMALY_LOG_SIZE": "10000000"}, "at most"),
    ({"BILLINGWATCH_EVENT_LOG_SIZE": "0"}, "BILLINGWATCH_EVENT_LOG_SIZE must be at least 1"),
    ({"BILLINGWATCH_EVENT_LOG_SIZE": "100001"}, "BILLINGWATCH_EVENT_LOG_SIZE must be at most 100000"),
    ({"BILLINGWATCH_LAPSE_GRACE_SECONDS": "-1"}, "at least 0"),
    ({"BILLINGWATCH_MAX_HEADER_BYTES": "100"}, "at least 4096"),
    ({"BILLINGWATCH_MAX_CONNECTIONS": "0"}, "at least 1"),
    ({"BILLINGWATCH_READ_TIMEOUT_SECONDS": "0"}, "at least 1"),
    ({"BILLINGWATCH_KEEP_ALIVE_TIMEOUT_SECONDS": "100000"}, "at most"),
])
def test_out_of_range_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_env(env)


@pytest.mark.parametrize(("raw", "message"), [("0", "at least 1"), ("-5", "at least 1"),
                                               (str(10**12), "at most"), ("1e3", "an integer")])
def test_bad_detector_threshold_is_a_start_up_error(raw: str, message: str) -> None:
    settings = from_env({"STRIPE_WEBHOOK_SECRET": SECRET,
                         "BILLINGWATCH_DETECTOR_DUPLICATE_CHARGE_WINDOW_SECONDS": raw})
    with pytest.raises(ConfigError, match="BILLINGWATCH_DETECTOR_DUPLICATE_CHARGE_WINDOW_SECONDS must be " + message):
        check_settings(settings)


@pytest.mark.parametrize("env", [
    {"BILLINGWATCH_DETECTOR_DOUBLE_INVOICE_WINDOW_SECONDS": "0"},
    {"BILLINGWATCH_SUBSCRIPTION_TTL_SECONDS": str(10**15)},
])
def test_serve_refuses_bad_settings_with_one_line(env: dict[str, str]) -> None:
    result = run_cli("serve", "--port", "1", env={"STRIPE_WEBHOOK_SECRET": SECRET, **env})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("billingwatch: " + next(iter(env)))


def test_event_data_in_log_lines_is_escaped(make_client: Client, caplog: pytest.LogCaptureFixture) -> None:
    client = make_client()
    now = int(time.time())
    forged = "ch_x\n2026-01-01 00:00:00 ERROR billingwatch: forged line\r\x1b[2J\u2028"
    for created, charge_id in ((now - 60, "ch_first"), (now, forged)):
        payload = se.body(se.event("charge.succeeded", se.charge(charge_id=charge_id, customer="cus_\nforged"),
                                   created=created))
        with caplog.at_level(logging.WARNING, logger="billingwatch"):
            assert client.post(URL, content=payload, headers=se.signed_headers(payload, SECRET)).status_code == 200
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("anomaly ")]
    assert "forged line" in line  # logged, escaped: one line, no terminal control
    assert not any(c in line for c in "\n\r\x1b\u2028")
    assert "\\n2026-01-01" in line


def test_safe_caps_length_and_keeps_printable_unicode() -> None:
    assert safe("café €") == "café €"
    assert safe("a\nb") == "a\\nb"
    assert len(safe("x" * 10_000)) < 400
