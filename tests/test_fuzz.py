"""Bad input, generated: whatever arrives, never a 5xx, and a rejected request changes nothing.

Property-based (hypothesis) against the real app in process, on both stores: arbitrary bodies
and headers, and validly signed Stripe events with fields removed or replaced by wrong types,
huge or negative numbers and odd unicode. Then the signature cases one by one.
"""

import copy
import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from billingwatch.fixtures import stripe_events as se
from billingwatch.metrics.labels import event_type_label, livemode_label
from billingwatch.money import CURRENCIES
from billingwatch.recording.events import MAX_AMOUNT
from billingwatch.recording.quarantine import envelope
from billingwatch.store import MemoryStore, RedisStore, Store
from billingwatch.store.contract import COUNTER_LIMIT
from tests.conftest import SECRET
from tests.metrics import Figures, scrape, store_figures, total

Client = Callable[..., TestClient]
URL = "/webhooks/stripe"
DEFAULT = ("account", "default")  # the account label of an exporter without BILLINGWATCH_ACCOUNTS_FILE
# 60 examples per property and store: the whole suite must stay within CI's 15 minutes on 2 cores
# (100 took about 40 s more); BILLINGWATCH_FUZZ_EXAMPLES raises it for a longer local run.
FUZZ = settings(max_examples=int(os.environ.get("BILLINGWATCH_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])




def figures(client: TestClient) -> Figures:
    """Every store-held figure /metrics shows (not the per-request counter, not process metrics)."""
    return store_figures(scrape(client))


def assert_rejected_cleanly(response: Any, before: dict[Any, float], client: TestClient) -> None:
    assert response.status_code in (400, 413), response.text
    reason = response.json()["error"]
    assert isinstance(reason, str) and reason and "\n" not in reason and "Traceback" not in reason
    assert figures(client) == before


def assert_quarantined_cleanly(response: Any, before: dict[Any, float], client: TestClient,
                               evt: dict[str, Any]) -> str:
    """A signed event envelope this version cannot record: kept in the quarantine (200, a one-line
    reason), and only the quarantine's own figures moved. Returns the reason."""
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["received"] is True and answer["quarantined"] is True, answer
    reason = answer["reason"]
    assert isinstance(reason, str) and reason and "\n" not in reason and "Traceback" not in reason
    after = figures(client)
    moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    mode = ("livemode", livemode_label(evt["livemode"]))
    assert moved == {
        ("billingwatch_events_quarantined_total",
         frozenset({("type", event_type_label(evt["type"], [])), mode, DEFAULT})): 1,
        ("billingwatch_events_quarantine_entries", frozenset({mode, DEFAULT})): 1,
    }, moved  # a quarantined event moves no other figure
    return reason


def base_events() -> list[dict[str, Any]]:
    return [
        se.event("charge.succeeded", se.charge()),
        se.event("charge.failed", se.charge(status="failed", reason="do_not_honor")),
        se.event("payment_intent.succeeded", se.payment_intent(charge_id="ch_fuzz")),
        se.event("invoice.paid", se.invoice()),
        se.event("invoice.payment_failed", se.invoice(status="open", attempt_count=2), api_version="2024-06-20"),
        se.event("customer.subscription.updated", se.subscription(subscription_id="sub_fuzz")),
        se.event("customer.subscription.created", se.subscription(old_shape=True, subscription_id="sub_fuzz_old"),
                 api_version="2024-06-20"),
        se.event("refund.created", se.refund()),
        se.event("charge.dispute.created", se.dispute()),
        se.event("radar.early_fraud_warning.created", se.early_fraud_warning()),
    ]


BASES = base_events()


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in children:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


# Values that broke or nearly broke a parser somewhere: out-of-range and float-overflowing
# integers, lone surrogates (valid JSON, not encodable as UTF-8), NUL, huge strings.
SPECIAL_VALUES = st.sampled_from([
    0, -1, 2**53 + 1, 2**63, -(2**63) - 1, 10**15 + 1, 10**40, -(10**40), 10**400, -(10**400),
    "", "\ud800", "cus_\udfff", "é" * 300, "a|b", "usd ", "USD", "x" * 100_000, "{prefix}", "\x00",
    float("nan"), float("inf"), 1e308, True, None, [], {},
])
weird_values = st.one_of(
    SPECIAL_VALUES,
    SPECIAL_VALUES,  # drawn as often as all the generic values together
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    evt = copy.deepcopy(draw(st.sampled_from(BASES)))
    evt["id"] = se.new_id("evt")
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(evt) or [("id",)]))
        parent = evt
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(weird_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    return evt


# The fields the parser reads: mutated far more often than the rest, which it ignores.
READ_FIELDS = ("id", "customer", "amount", "amount_received", "currency", "status", "charge", "payment_intent",
               "latest_charge", "fingerprint", "reason", "fraud_type", "total", "amount_paid", "attempt_count",
               "subscription", "billing_reason", "created", "current_period_end", "unit_amount", "quantity",
               "interval", "interval_count", "type", "livemode", "object", "account")


@st.composite
def targeted_events(draw: st.DrawFn) -> dict[str, Any]:
    evt = copy.deepcopy(draw(st.sampled_from(BASES)))
    evt["id"] = se.new_id("evt")
    # The envelope, the object's own fields, and the nested ones the parser reads.
    read = [p for p in paths(evt) if p[-1] in READ_FIELDS
            and (len(p) <= 3 or p[-1] in ("fingerprint", "unit_amount", "quantity", "current_period_end"))]
    for path in draw(st.lists(st.sampled_from(read), min_size=1, max_size=2, unique=True)):
        parent = evt
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = draw(weird_values)
        except (KeyError, IndexError, TypeError):
            continue  # the other mutation replaced a container on this path
    return evt


def test_arbitrary_bodies_and_headers_are_rejected_untouched(client: TestClient) -> None:
    printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
    now = int(time.time())
    signature = st.one_of(
        st.none(),
        printable,
        st.builds(lambda t, v: f"t={t},v1={v}", st.integers(now - 1000, now + 1000),
                  st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
    )

    @FUZZ
    @given(body=st.one_of(st.binary(max_size=3000), st.text(max_size=500).map(str.encode)),
           header=signature, content_type=st.one_of(st.none(), printable))
    def check(body: bytes, header: str | None, content_type: str | None) -> None:
        headers = {k: v for k, v in (("Stripe-Signature", header), ("Content-Type", content_type)) if v is not None}
        before = figures(client)
        assert_rejected_cleanly(client.post(URL, content=body, headers=headers), before, client)

    check()


def test_signed_events_with_broken_fields_are_recorded_or_quarantined_never_4xx_or_5xx(client: TestClient) -> None:
    """Issue 23: any mutation of a real event shape that keeps a valid signed envelope is recorded
    or quarantined (2xx), never refused; one that breaks the envelope is refused and changes nothing."""
    @FUZZ
    @given(evt=st.one_of(mutated_events(), targeted_events()))
    def check(evt: dict[str, Any]) -> None:
        payload = json.dumps(evt).encode()
        before = figures(client)
        response = client.post(URL, content=payload, headers=se.signed_headers(payload, SECRET))
        if envelope(evt) is None:
            assert response.status_code == 400, response.text
            assert_rejected_cleanly(response, before, client)
            return
        assert response.status_code == 200, response.text
        assert response.json()["received"] is True
        if response.json().get("quarantined"):
            assert_quarantined_cleanly(response, before, client, evt)

    check()


@FUZZ
@given(value=weird_values)
def test_any_json_value_as_the_whole_body_is_rejected(value: Any) -> None:
    from billingwatch.recording.events import InvalidEvent, parse_event

    with pytest.raises(InvalidEvent):
        parse_event(value if not isinstance(value, dict) else {**value, "object": "not-an-event"})


# ------------------------------------------------------------------ signatures


def post_signed(client: TestClient, payload: bytes, header: str) -> Any:
    return client.post(URL, content=payload, headers={"Stripe-Signature": header, "Content-Type": "application/json"})


def test_expired_timestamp_is_rejected(client: TestClient) -> None:
    payload = se.body(se.event("charge.succeeded", se.charge()))
    before = figures(client)
    response = post_signed(client, payload, se.sign(payload, SECRET, timestamp=int(time.time()) - 301))
    assert_rejected_cleanly(response, before, client)


def test_replayed_old_delivery_is_rejected_and_a_recent_one_is_a_duplicate(client: TestClient) -> None:
    payload = se.body(se.event("charge.succeeded", se.charge()))
    header = se.sign(payload, SECRET)
    assert post_signed(client, payload, header).json()["duplicate"] is False
    after_first = figures(client)
    assert post_signed(client, payload, header).json() == {"received": True, "duplicate": True, "anomalies": 0}
    assert figures(client) == after_first
    # The same body captured with an old signature and replayed later: too old, rejected.
    old = post_signed(client, payload, se.sign(payload, SECRET, timestamp=int(time.time()) - 3600))
    assert_rejected_cleanly(old, after_first, client)


def test_wrong_secret_is_rejected(client: TestClient) -> None:
    payload = se.body(se.event("charge.succeeded", se.charge()))
    before = figures(client)
    assert_rejected_cleanly(post_signed(client, payload, se.sign(payload, "whsec_not_ours")), before, client)


def test_either_of_two_rotated_secrets_is_accepted_a_third_is_not(make_client: Client) -> None:
    client = make_client(webhook_secrets=("whsec_old_secret", "whsec_new_secret"))
    for secret in ("whsec_old_secret", "whsec_new_secret"):
        payload = se.body(se.event("charge.succeeded", se.charge()))
        assert post_signed(client, payload, se.sign(payload, secret)).status_code == 200
    payload = se.body(se.event("charge.succeeded", se.charge()))
    before = figures(client)
    assert_rejected_cleanly(post_signed(client, payload, se.sign(payload, SECRET)), before, client)


def test_rotation_from_the_environment_accepts_both_secrets() -> None:
    from billingwatch.config import from_env

    settings_ = from_env({"STRIPE_WEBHOOK_SECRET": "whsec_old_secret, whsec_new_secret"})
    assert settings_.webhook_secrets == ("whsec_old_secret", "whsec_new_secret")


def test_header_with_several_v1_values_is_accepted_when_one_matches(client: TestClient) -> None:
    payload = se.body(se.event("charge.succeeded", se.charge()))
    good = se.sign(payload, SECRET)  # t=...,v1=<hex>
    timestamp, v1 = good.split(",")
    bad = "v1=" + "0" * 64
    assert post_signed(client, payload, f"{timestamp},{bad},{v1}").status_code == 200
    other = se.body(se.event("charge.succeeded", se.charge()))
    before = figures(client)
    other_ts = se.sign(other, SECRET).split(",")[0]
    assert_rejected_cleanly(post_signed(client, other, f"{other_ts},{bad},v1={'1' * 64}"), before, client)
    assert_rejected_cleanly(post_signed(client, other, f"{other_ts},v0={se.sign(other, SECRET).split('v1=')[1]}"),
                            before, client)


# ------------------------------------------------------------------ found by fuzzing: regular tests


@pytest.mark.parametrize("field,value", [
    ("id", "evt_\ud800"),  # a lone surrogate: valid JSON, not UTF-8; Redis keys are UTF-8 (was a 500)
    ("customer", "cus_\udfff"),
    ("fingerprint", "fp_\ud800"),  # fingerprint: ignored rather than rejected, it is optional
])
def test_lone_surrogates_in_ids_never_5xx(client: TestClient, field: str, value: str) -> None:
    evt = se.event("charge.succeeded", se.charge(customer=None if field == "fingerprint" else "cus_alice"))
    if field == "id":
        evt["id"] = value
    elif field == "customer":
        evt["data"]["object"]["customer"] = value
    else:
        evt["data"]["object"]["payment_method_details"]["card"]["fingerprint"] = value
    payload = json.dumps(evt).encode()
    before = figures(client)
    response = client.post(URL, content=payload, headers=se.signed_headers(payload, SECRET))
    if field == "fingerprint":
        assert response.status_code == 200
    elif field == "customer":
        assert_quarantined_cleanly(response, before, client, evt)
    else:  # not even an event envelope: refused
        assert_rejected_cleanly(response, before, client)


@pytest.mark.parametrize("where,value", [
    ("unit_amount", 10**400),  # overflowed the float MRR arithmetic (was a 500)
    ("quantity", -(10**40)),
    ("current_period_end", 10**400),  # not a Redis score: the script failed, a 503 Stripe retries forever
])
def test_out_of_range_subscription_numbers_are_quarantined(client: TestClient, where: str, value: int) -> None:
    sub = se.subscription(subscription_id="sub_huge")
    item = sub["items"]["data"][0]
    (item["price"] if where == "unit_amount" else item)[where] = value
    evt = se.event("customer.subscription.updated", sub)
    payload = json.dumps(evt).encode()
    before = figures(client)
    response = client.post(URL, content=payload, headers=se.signed_headers(payload, SECRET))
    assert_quarantined_cleanly(response, before, client, evt)


def test_deeply_nested_json_is_400_not_a_recursion_error(client: TestClient) -> None:
    payload = b"[" * 200_000 + b"]" * 200_000
    before = figures(client)
    response = client.post(URL, content=payload, headers=se.signed_headers(payload, SECRET))
    assert_rejected_cleanly(response, before, client)


# ------------------------------------------------------------------ amounts and label values (issue 11)


@pytest.fixture(params=["memory", "redis"])
def client_and_store(request: pytest.FixtureRequest, make_client: Client) -> tuple[TestClient, Store]:
    store: Store = MemoryStore() if request.param == "memory" else RedisStore(
        request.getfixturevalue("redis_url"), prefix=request.getfixturevalue("redis_prefix"))
    return make_client(store=store), store


AMOUNTS = st.one_of(
    st.sampled_from([0, 1, -1, MAX_AMOUNT, MAX_AMOUNT + 1, -MAX_AMOUNT, 99_999_999, 10**15, -(10**15)]),
    st.integers(-2 * MAX_AMOUNT, 2 * MAX_AMOUNT),
)


def amount_event(kind: str, amount: int) -> tuple[dict[str, Any], str, dict[str, str]]:
    """An event carrying `amount`, and the money family and labels it adds to."""
    if kind == "charge":
        return (se.event("charge.succeeded", se.charge(amount=amount)), "billingwatch_charge_amount_total",
                {"status": "succeeded", "currency": "usd", "livemode": "false"})
    if kind == "refund":
        return (se.event("refund.created", se.refund(amount=amount)), "billingwatch_refund_amount_total",
                {"currency": "usd", "livemode": "false"})
    if kind == "dispute":
        return (se.event("charge.dispute.created", se.dispute(amount=amount)), "billingwatch_dispute_amount_total",
                {"currency": "usd", "livemode": "false"})
    invoice = se.invoice()
    invoice["amount_paid"] = amount
    return (se.event("invoice.paid", invoice), "billingwatch_invoice_paid_amount_total",
            {"currency": "usd", "livemode": "false"})


def test_amounts_are_accepted_exactly_when_stripe_could_send_them(client: TestClient) -> None:
    @FUZZ
    @given(kind=st.sampled_from(["charge", "refund", "dispute", "invoice"]), amount=AMOUNTS)
    def check(kind: str, amount: int) -> None:
        evt, family, labels = amount_event(kind, amount)
        key = (family, frozenset({*labels.items(), DEFAULT}))
        before = figures(client)
        payload = json.dumps(evt).encode()
        response = client.post(URL, content=payload, headers=se.signed_headers(payload, SECRET))
        if 0 <= amount <= MAX_AMOUNT:
            assert response.status_code == 200, response.text
            assert figures(client)[key] == pytest.approx(before.get(key, 0) + amount / 100)
        else:
            assert_quarantined_cleanly(response, before, client, evt)
        assert all(v >= 0 for (name, _), v in figures(client).items() if name.endswith("_total"))

    check()


# ------------------------------------------------------------------ headers and query strings (issue 11)


def requests_counted(client: TestClient) -> float:
    return total(scrape(client), "billingwatch_webhook_requests_total")


# Header values as a server hands them over: any byte but CR, LF (they end the header) and NUL.
header_bytes = st.binary(max_size=3000).map(lambda b: b.translate(None, b"\r\n\x00"))


def test_any_bytes_in_stripe_signature_are_a_counted_400(client: TestClient) -> None:
    payload = se.body(se.event("charge.succeeded", se.charge()))
    now = str(int(time.time())).encode()

    @FUZZ
    @given(raw=st.one_of(header_bytes, header_bytes.map(lambda b: b"t=" + now + b",v1=" + b)))
    def check(raw: bytes) -> None:
        before, counted = figures(client), requests_counted(client)
        response = client.post(URL, content=payload, headers=[(b"stripe-signature", raw),
                                                              (b"content-type", b"application/json")])
        assert_rejected_cleanly(response, before, client)
        assert requests_counted(client) == counted + 1

    check()


def test_totals_near_the_64_bit_limit_are_refused_whole(client_and_store: tuple[TestClient, Store]) -> None:
    client, store = client_and_store
    field = "rfa|usd|false"
    key = ("billingwatch_refund_amount_total", frozenset({("currency", "usd"), ("livemode", "false"), DEFAULT}))

    @FUZZ
    @given(headroom=st.integers(0, 2 * MAX_AMOUNT), amount=st.integers(0, MAX_AMOUNT))
    def check(headroom: int, amount: int) -> None:
        held = client.portal.call(store.snapshot, time.time(), 0).counters.get(field, 0)  # type: ignore[union-attr]
        client.portal.call(store.increment, {field: COUNTER_LIMIT - headroom - held})  # type: ignore[union-attr]
        evt = se.event("refund.created", se.refund(amount=amount))
        payload = json.dumps(evt).encode()
        before = figures(client)
        response = client.post(URL, content=payload, headers=se.signed_headers(payload, SECRET))
        if amount <= headroom:
            assert response.status_code == 200, response.text
            assert figures(client)[key] == pytest.approx((COUNTER_LIMIT - headroom + amount) / 100)
        else:
            assert "64-bit" in assert_quarantined_cleanly(response, before, client, evt)

    check()


def test_header_sizes_never_5xx_and_over_the_cap_are_431(make_client: Client) -> None:
    client = make_client(max_header_bytes=8192)
    payload = se.body(se.event("charge.succeeded", se.charge()))

    @FUZZ
    @given(sizes=st.lists(st.integers(0, 6000), max_size=6), name=st.sampled_from(["X-Pad", "Stripe-Signature"]))
    def check(sizes: list[int], name: str) -> None:
        headers = [(f"{name}-{i}" if i else name, "a" * size) for i, size in enumerate(sizes)]
        before = figures(client)
        response = client.post(URL, content=payload, headers=[*headers, ("Content-Type", "application/json")])
        assert response.status_code in (400, 431), response.text
        total = sum(len(k) + len(v) + 4 for k, v in headers)
        if total > 8192:
            assert response.status_code == 431
        elif total < 8192 - 400:  # leaves room for the client's own headers and the path
            assert response.status_code == 400
        assert "error" in response.json()
        assert figures(client) == before

    check()


CURRENCY_VALUES = st.one_of(
    st.sampled_from(sorted(CURRENCIES)),
    st.sampled_from(["usd\n", "USD", "zzz", " usd", "usd ", "u\u0455d", "", "us", "usdd", "xts", "xxx"]),
    st.text(max_size=4),
)


def test_label_values_stay_in_their_closed_sets(client: TestClient) -> None:
    @FUZZ
    @given(currency=CURRENCY_VALUES, kind=st.sampled_from(["charge", "refund", "dispute", "invoice"]))
    def check(currency: str, kind: str) -> None:
        evt, _, _ = amount_event(kind, 100)
        evt["data"]["object"]["currency"] = currency
        payload = json.dumps(evt).encode()
        before = figures(client)
        response = client.post(URL, content=payload, headers=se.signed_headers(payload, SECRET))
        if currency in CURRENCIES:
            assert response.status_code == 200, response.text
        else:
            assert "currency" in assert_quarantined_cleanly(response, before, client, evt)
        for _, labels in figures(client):
            values = dict(labels)
            assert values.get("currency", "usd") in CURRENCIES
            assert values.get("livemode", "true") in ("true", "false")

    check()


GET_ENDPOINTS = ["/", "/metrics", "/health", "/ready", "/api/detectors", "/api/anomalies"]


def test_random_query_strings_and_accept_headers_never_5xx_on_get_endpoints(make_client: Client) -> None:
    client = make_client()
    key = st.sampled_from(["limit", "detector", "x", "", "limit[]"]) | st.text(max_size=10)
    value = st.sampled_from(["²", "1" * 5000, "-1", "0", "\x00", "%", "\uff11\uff12"]) | st.text(max_size=50) \
        | st.integers().map(str)
    accept = st.none() | st.sampled_from([
        "application/openmetrics-text; version=abc", "application/openmetrics-text; version=",
        "application/openmetrics-text;version=1.0.0;escaping=x", "*/*;q=abc",
    ]) | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)

    @FUZZ
    @given(path=st.sampled_from(GET_ENDPOINTS), params=st.lists(st.tuples(key, value), max_size=3),
           raw=st.binary(max_size=60), accept=accept)
    def check(path: str, params: list[tuple[str, str]], raw: bytes, accept: str | None) -> None:
        from urllib.parse import quote_from_bytes, urlencode

        query = urlencode(params) + "&" + quote_from_bytes(raw, safe="=&")
        headers = {"Accept": accept} if accept is not None else {}
        response = client.get(f"{path}?{query}", headers=headers)
        assert response.status_code < 500, (path, query, accept, response.text)

    check()
