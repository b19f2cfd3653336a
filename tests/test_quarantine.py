"""The quarantine (issue 23): a signed Stripe event we cannot record is kept, answered 2xx, counted
apart, and recorded exactly once by `billingwatch requeue` once it can be.

On both stores: the real app in process against a real redis-server and the in-process store,
and a real `billingwatch serve` process with `billingwatch requeue` run as its own process.
"""

import copy
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from billingwatch.detectors import build_detectors
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.quarantine import Quarantine, envelope, quarantine
from billingwatch.recording.recorder import Recorder
from billingwatch.store import MemoryStore, RedisStore, Store
from testkit.processes import Exporter, RedisClusterServers
from tests.conftest import SECRET, running_exporter
from tests.metrics import Figures, scrape, store_figures, total, value
from tests.recording import DEDUP_TTL, SUBSCRIPTION_TTL, figures
from tests.replay_helpers import billingwatch

Client = Callable[..., TestClient]
URL = "/webhooks/stripe"
QUARANTINE_FAMILIES = ("billingwatch_events_quarantined_total", "billingwatch_events_quarantine_entries",
                       "billingwatch_events_quarantine_dropped_total")


def odd_shapes() -> list[tuple[str, dict[str, Any], str]]:
    """Signed events built from Stripe's real object shapes that this version refuses: (name, event, reason)."""
    invoice = se.invoice()
    del invoice["created"]
    refund = se.refund()
    del refund["id"]
    many = se.charge(charge_id="ch_many_refunds")
    many["refunds"] = {"object": "list", "has_more": False, "url": "/v1/charges/ch_many_refunds/refunds",
                       "data": [se.refund(charge_id="ch_many_refunds") for _ in range(101)]}
    typed = se.charge()
    typed["amount"] = "2000"
    return [
        ("invoice without created", se.event("invoice.paid", invoice), "invoice.created is missing"),
        ("refund without an id", se.event("refund.created", refund), "refund.id is missing"),
        ("negative amount", se.event("charge.succeeded", se.charge(amount=-500)), "must not be negative"),
        ("more than 100 refunds", se.event("charge.refunded", many), "more than 100"),
        ("amount of the wrong type", se.event("charge.succeeded", typed), "charge.amount must be an integer"),
    ]


def post(client: TestClient, evt: dict[str, Any], **headers: str) -> httpx.Response:
    payload = json.dumps(evt).encode()
    return client.post(URL, content=payload, headers={**se.signed_headers(payload, SECRET), **headers})


def others(samples: Figures) -> Figures:
    """Every store-held figure but the quarantine's own."""
    return {k: v for k, v in store_figures(samples).items() if not k[0].startswith(QUARANTINE_FAMILIES)}


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def new_store(request: pytest.FixtureRequest, kind: str, quarantine_size: int = 1000) -> Store:
    if kind == "memory":
        return MemoryStore(quarantine_size=quarantine_size)
    return RedisStore(request.getfixturevalue("redis_url"), prefix=request.getfixturevalue("redis_prefix"),
                      quarantine_size=quarantine_size)


@pytest.mark.parametrize("name,evt,reason", odd_shapes(), ids=[s[0] for s in odd_shapes()])
def test_a_signed_odd_shape_is_quarantined_once_and_moves_nothing_else(
        request: pytest.FixtureRequest, make_client: Client, store_kind: str, name: str, evt: dict[str, Any],
        reason: str) -> None:
    client = make_client(store=new_store(request, store_kind))
    evt = copy.deepcopy(evt)
    evt["id"] = se.new_id("evt")
    before = scrape(client)
    response = post(client, evt)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["received"] is True and answer["quarantined"] is True and reason in answer["reason"], answer
    after = scrape(client)
    assert value(after, "billingwatch_webhook_requests_total", result="quarantined") == 1
    assert value(after, "billingwatch_events_quarantined_total", type=evt["type"], livemode="false") == 1
    assert total(after, "billingwatch_events_quarantined_total") == 1
    assert value(after, "billingwatch_events_quarantine_entries", livemode="false") == 1
    assert others(after) == others(before)  # no event, lag, money or detector figure moved

    # Stripe's retry (or a resend from the Dashboard): a duplicate, nothing moves.
    again = post(client, evt)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert store_figures(scrape(client)) == store_figures(after)
    assert value(scrape(client), "billingwatch_webhook_requests_total", result="duplicate") == 1

    listed = client.get("/api/quarantine").json()["quarantine"]
    assert [(e["id"], e["type"], e["livemode"], e["history"]) for e in listed] == [
        (evt["id"], evt["type"], False, False)]
    assert reason in listed[0]["reason"] and "body" not in listed[0]
    with_body = client.get("/api/quarantine", params={"body": "true"}).json()["quarantine"]
    assert json.loads(with_body[0]["body"]) == evt  # kept whole, as signed
    page = client.get("/events")
    assert page.status_code == 200 and "Quarantine" in page.text and evt["id"] in page.text
    log = client.get("/api/events").json()["events"]
    assert [(line["id"], line["result"]) for line in log] == [(evt["id"], "duplicate"), (evt["id"], "quarantined")]


def test_bodies_that_are_no_signed_event_envelope_are_still_refused(
        request: pytest.FixtureRequest, make_client: Client, store_kind: str) -> None:
    client = make_client(store=new_store(request, store_kind))
    bad = se.event("charge.succeeded", se.charge(amount=-1))
    before = store_figures(scrape(client))
    payload = json.dumps(bad).encode()
    # Unsigned.
    assert client.post(URL, content=payload, headers={"Content-Type": "application/json"}).status_code == 400
    # Signed, but not an event envelope: no object "event", no created, livemode not a boolean.
    for broken in ({**bad, "object": "charge"}, {k: v for k, v in bad.items() if k != "created"},
                   {**bad, "livemode": "false"}, {**bad, "type": "Charge Succeeded"}):
        response = post(client, broken)
        assert response.status_code == 400 and "error" in response.json(), response.text
    assert store_figures(scrape(client)) == before
    assert value(scrape(client), "billingwatch_webhook_requests_total", result="quarantined") == 0
    assert client.get("/api/quarantine").json() == {"quarantine": []}


def test_insecure_mode_keeps_its_test_mode_only_rule(request: pytest.FixtureRequest, make_client: Client,
                                                     store_kind: str) -> None:
    client = make_client(store=new_store(request, store_kind), insecure_skip_signature=True, webhook_secrets=())
    live = se.event("charge.succeeded", se.charge(amount=-1), livemode=True)
    test = se.event("charge.succeeded", se.charge(amount=-1))
    headers = {"Content-Type": "application/json"}
    refused = client.post(URL, content=json.dumps(live), headers=headers)
    assert refused.status_code == 400, refused.text  # a livemode event is never kept unverified
    kept = client.post(URL, content=json.dumps(test), headers=headers)
    assert kept.status_code == 200 and kept.json()["quarantined"] is True
    assert [e["id"] for e in client.get("/api/quarantine").json()["quarantine"]] == [test["id"]]


def test_the_cap_drops_the_oldest_and_counts_them(request: pytest.FixtureRequest, make_client: Client,
                                                  store_kind: str) -> None:
    client = make_client(store=new_store(request, store_kind, quarantine_size=3), quarantine_size=3)
    events = [se.event("charge.succeeded", se.charge(amount=-1), created=1_700_000_000 + i) for i in range(5)]
    for evt in events:
        assert post(client, evt).json()["quarantined"] is True
    samples = scrape(client)
    assert value(samples, "billingwatch_events_quarantine_entries", livemode="false") == 3
    assert value(samples, "billingwatch_events_quarantine_dropped_total", livemode="false") == 2
    assert value(samples, "billingwatch_events_quarantined_total", type="charge.succeeded", livemode="false") == 5
    listed = client.get("/api/quarantine").json()["quarantine"]
    assert [e["id"] for e in listed] == [e["id"] for e in events[2:]]  # oldest first, the two oldest gone
    # A dropped event's dedup key stays: its redelivery is a duplicate, not a new entry.
    assert post(client, events[0]).json()["duplicate"] is True
    assert value(scrape(client), "billingwatch_events_quarantine_entries", livemode="false") == 3


def test_a_replayed_event_is_kept_as_history(request: pytest.FixtureRequest, make_client: Client,
                                             store_kind: str) -> None:
    client = make_client(store=new_store(request, store_kind))
    evt = se.event("charge.succeeded", se.charge(amount=-1))
    assert post(client, evt, **{"BillingWatch-Replay": "1"}).json()["quarantined"] is True
    assert client.get("/api/quarantine").json()["quarantine"][0]["history"] is True


def test_requeue_over_the_api_needs_authorisation_and_json(request: pytest.FixtureRequest, make_client: Client,
                                                           store_kind: str) -> None:
    client = make_client(store=new_store(request, store_kind), api_token="t0ken-for-the-quarantine-test")
    assert client.get("/api/quarantine").status_code == 401
    assert client.post("/api/quarantine/requeue", json={}).status_code == 401
    auth = {"Authorization": "Bearer t0ken-for-the-quarantine-test"}
    assert client.post("/api/quarantine/requeue", content=b"{}",
                       headers={**auth, "Content-Type": "text/plain"}).status_code == 415
    assert client.post("/api/quarantine/requeue", json={}, headers=auth).json() == {
        "recorded": 0, "duplicates": 0, "anomalies": 0, "kept": []}


# ------------------------------------------------------------------ requeue, real processes

# A subscription as big as one may be (9e11 minor units a month, 9e14 in the store's thousandths):
# ten of one customer's reach the customer MRR the store computes exactly (9e15), the eleventh
# is refused by the store's checks. Cancelling one makes room: the honest "change" after which
# the same quarantined event records.
BIG_UNIT, BIG_QUANTITY = 100_000_000_000, 9
MRR = "billingwatch_mrr_amount"


@pytest.fixture
def exporter(request: pytest.FixtureRequest, store_kind: str) -> Iterator[Exporter]:
    env = {} if store_kind == "memory" else {"REDIS_URL": request.getfixturevalue("redis_url"),
                                             "BILLINGWATCH_REDIS_PREFIX": request.getfixturevalue("redis_prefix")}
    with running_exporter(**env) as running:
        yield running


def deliver(exporter: Exporter, evt: dict[str, Any]) -> dict[str, Any]:
    payload = se.body(evt)
    response = httpx.post(exporter.url + URL, content=payload, headers=se.signed_headers(payload, SECRET))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def big_subscription(n: int, created: int) -> dict[str, Any]:
    sub = se.subscription(unit_amount=BIG_UNIT, quantity=BIG_QUANTITY, customer="cus_big",
                          subscription_id=f"sub_big{n}", created=created)
    return se.event("customer.subscription.created", sub, created=created)


def test_requeue_records_a_quarantined_event_exactly_once_after_the_change(exporter: Exporter) -> None:
    created = int(time.time()) - 600
    for n in range(10):
        assert deliver(exporter, big_subscription(n, created))["duplicate"] is False
    eleventh = big_subscription(10, created)
    answer = deliver(exporter, eleventh)
    assert answer["quarantined"] is True and "customer's mrr" in answer["reason"], answer
    samples = scrape(exporter.url)
    assert value(samples, MRR, currency="usd", livemode="false") == 10 * BIG_UNIT * BIG_QUANTITY / 100
    assert value(samples, "billingwatch_events_total", type="customer.subscription.created", livemode="false") == 10

    # Before the change: requeue keeps it, says why, and exits 1.
    kept = billingwatch("requeue", "--url", exporter.url)
    assert kept.returncode == 1, kept.stderr
    assert f"still quarantined: {eleventh['id']}" in kept.stdout and "customer's mrr" in kept.stdout
    assert "0 recorded (0 anomalies), 0 recorded before, 1 still quarantined" in kept.stdout

    # The change: the customer cancels one subscription. A redelivery is still a duplicate:
    # only requeue records a quarantined event.
    deleted = se.subscription(status="canceled", unit_amount=BIG_UNIT, quantity=BIG_QUANTITY, customer="cus_big",
                              subscription_id="sub_big0", created=created + 60)
    assert deliver(exporter, se.event("customer.subscription.deleted", deleted, created=created + 60))[
        "duplicate"] is False
    assert deliver(exporter, eleventh)["duplicate"] is True
    assert value(scrape(exporter.url), MRR, currency="usd", livemode="false") == 9 * BIG_UNIT * BIG_QUANTITY / 100

    done = billingwatch("requeue", "--url", exporter.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 recorded (0 anomalies), 0 recorded before, 0 still quarantined" in done.stdout
    after = scrape(exporter.url)
    assert value(after, MRR, currency="usd", livemode="false") == 10 * BIG_UNIT * BIG_QUANTITY / 100
    assert value(after, "billingwatch_events_total", type="customer.subscription.created", livemode="false") == 11
    assert value(after, "billingwatch_events_quarantine_entries", livemode="false") == 0
    assert value(after, "billingwatch_events_quarantined_total", type="customer.subscription.created",
                 livemode="false") == 1
    assert httpx.get(exporter.url + "/api/quarantine").json() == {"quarantine": []}

    # Once: a second requeue and another redelivery change nothing.
    again = billingwatch("requeue", "--url", exporter.url)
    assert again.returncode == 0 and "0 recorded (0 anomalies), 0 recorded before, 0 still quarantined" in again.stdout
    assert deliver(exporter, eleventh)["duplicate"] is True
    assert store_figures(scrape(exporter.url)) == store_figures(after)


def test_requeue_sends_the_token_and_fails_in_one_line() -> None:
    token = "requeue-test-token-0123456789"
    with running_exporter(BILLINGWATCH_API_TOKEN=token) as exporter:
        refused = billingwatch("requeue", "--url", exporter.url)
        assert refused.returncode == 1 and "HTTP 401" in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
        allowed = billingwatch("requeue", "--url", exporter.url, env={"BILLINGWATCH_API_TOKEN": token})
        assert allowed.returncode == 0, allowed.stderr
    gone = billingwatch("requeue", "--url", exporter.url)
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1 and "Traceback" not in gone.stderr


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers(masters=3) as servers:
        yield servers


@pytest.mark.parametrize("redis", ["redis-server", "redis-cluster"])
def test_requeue_after_a_setting_widens_acceptance_records_it_once(request: pytest.FixtureRequest,
                                                                   redis: str) -> None:
    """The "upgrade": the exporter is restarted on the same Redis with a setting that accepts what
    the old one refused. An event created 10 minutes after it was received (beyond the default
    300 s signature tolerance, the allowed clock skew) is quarantined; with a tolerance of an
    hour it is Stripe's, and requeue records it once, live, as received then. On a Redis
    Cluster too, through a node that does not own the store's slot."""
    prefix = request.getfixturevalue("redis_prefix")
    if redis == "redis-cluster":
        servers: RedisClusterServers = request.getfixturevalue("cluster")
        owner = servers.owner(int(servers.cli(servers.ports[0], "cluster", "keyslot", "{" + prefix + "}")))
        url = servers.url(next(p for p in servers.ports if p != owner))
    else:
        url = request.getfixturevalue("redis_url")
    env = {"REDIS_URL": url, "BILLINGWATCH_REDIS_PREFIX": prefix}
    evt = se.event("charge.succeeded", se.charge(amount=1234), created=int(time.time()) + 600)
    with running_exporter(**env) as before:
        answer = deliver(before, evt)
        assert answer["quarantined"] is True and "in the future" in answer["reason"], answer
        kept = billingwatch("requeue", "--url", before.url)
        assert kept.returncode == 1 and "1 still quarantined" in kept.stdout
    with running_exporter(BILLINGWATCH_SIGNATURE_TOLERANCE_SECONDS="3600", **env) as after:
        assert deliver(after, evt)["duplicate"] is True  # only requeue records a quarantined event
        done = billingwatch("requeue", "--url", after.url)
        assert done.returncode == 0 and "1 recorded (0 anomalies)" in done.stdout, done.stdout + done.stderr
        samples = scrape(after.url)
        charged = value(samples, "billingwatch_charge_amount_total", status="succeeded", currency="usd",
                        livemode="false")
        assert charged == 12.34
        assert value(samples, "billingwatch_events_total", type="charge.succeeded", livemode="false") == 1
        assert value(samples, "billingwatch_history_events_total", type="charge.succeeded", livemode="false") == 0
        assert billingwatch("requeue", "--url", after.url).returncode == 0
        assert deliver(after, evt)["duplicate"] is True
        assert store_figures(scrape(after.url)) == store_figures(samples)


# ------------------------------------------------------------------ the store contract, both stores


def quarantine_record(store_evt: dict[str, Any], reason: str = "because") -> Quarantine:
    event = envelope(store_evt)
    assert event is not None
    return quarantine(event, store_evt, json.dumps(store_evt), reason, received_at=time.time(), history=False,
                      dedup_ttl=3600, detector_event_types=[])


@pytest.mark.anyio
async def test_the_quarantine_mark_is_a_duplicate_but_for_requeue(store: Store) -> None:
    evt = se.event("charge.succeeded", se.charge(amount=700))
    assert await store.quarantine(quarantine_record(evt)) is False
    assert await store.quarantine(quarantine_record(evt)) is True  # a redelivery
    assert [e["id"] for e in await store.quarantined(10)] == [evt["id"]]
    recorder = Recorder(store, build_detectors({}), DEDUP_TTL, SUBSCRIPTION_TTL)
    assert (await recorder.record(evt)).duplicate is True  # an ordinary delivery: the mark holds
    assert (await recorder.record(evt, requeue=True)).duplicate is False  # requeue records it
    assert (await recorder.record(evt, requeue=True)).duplicate is True  # once
    await store.release("false", evt["id"])
    await store.release("false", evt["id"])  # twice: still one entry fewer, never negative
    assert await store.quarantined(10) == []
    samples = await figures(store)
    assert value(samples, "billingwatch_events_quarantine_entries", livemode="false") == 0
    assert value(samples, "billingwatch_events_quarantined_total", type="charge.succeeded", livemode="false") == 1
    assert value(samples, "billingwatch_charge_amount_total", status="succeeded", currency="usd",
                 livemode="false") == 7
    # A recorded event is never quarantined after all.
    assert await store.quarantine(quarantine_record(evt)) is True
    assert await store.quarantined(10) == []
