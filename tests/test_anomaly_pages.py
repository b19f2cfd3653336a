"""The /anomalies pages on both stores, in process: filters and the time range, cursor paging that
new anomalies do not shift, one page per anomaly under an id both stores give alike, the verdict
buttons with their CSRF refusal and counter, and the access rule of /events."""

import re
import time
import uuid
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import pytest
from starlette.testclient import TestClient

from billingwatch.anomaly_ref import anomaly_id
from billingwatch.fixtures import stripe_events as se
from billingwatch.http.anomaly_query import PAGE_SIZE, parse_time
from billingwatch.store import MemoryStore, RedisStore, Store
from testkit.processes import RedisServer
from tests.conftest import SECRET
from tests.metrics import parse, value

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


class Listing(HTMLParser):
    """The anomalies a page lists (their ids, in order) and its links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.links: list[str] = []
        self.next: str | None = None
        self.tags: set[str] = set()
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if tag == "li" and "anomaly" in a.get("class", "").split():
            self.ids.append(a["data-id"])
        if tag == "a":
            self.links.append(a["href"])
            if a.get("rel") == "next":
                self.next = a["href"]


def post(client: TestClient, evt: dict[str, Any]) -> None:
    payload = se.body(evt)
    assert client.post("/webhooks/stripe", content=payload, headers=se.signed_headers(payload, SECRET)).status_code \
        == 200


def duplicate(client: TestClient, customer: str, created: int, amount: int = 4999, livemode: bool = False) -> None:
    for n in (1, 2):
        charge = se.charge(customer=customer, charge_id=f"ch_{customer}_{n}", amount=amount, livemode=livemode)
        post(client, se.event("charge.succeeded", charge, event_id=f"evt_{customer}_{n}", created=created + n,
                              livemode=livemode))


def negative_invoice(client: TestClient, created: int, n: int) -> None:
    post(client, se.event("invoice.finalized", se.invoice(total=-100 - n, billing_reason="manual",
                                                          invoice_id=f"in_neg_{n}"), event_id=f"evt_in_neg_{n}",
                          created=created))


def listing(client: TestClient, query: str = "") -> Listing:
    response = client.get("/anomalies" + query)
    assert response.status_code == 200, response.text
    return Listing(response.text)


def test_filters_and_time_range(client: TestClient) -> None:
    now = int(time.time())
    duplicate(client, "cus_bob", now - 2 * 86400, amount=1500)  # two days ago
    duplicate(client, "cus_alice", now - 600)
    negative_invoice(client, now - 120, 1)
    records = client.get("/api/anomalies").json()["anomalies"]
    ids = {(r["detector"], r.get("customer")): anomaly_id(r) for r in records}
    alice, bob = ids["duplicate_charge", "cus_alice"], ids["duplicate_charge", "cus_bob"]
    invoice = ids["negative_invoice", "cus_alice"]

    assert listing(client).ids == [invoice, alice, bob]  # newest found first; the default range is 7 days
    assert listing(client, "?range=24h").ids == [invoice, alice]
    assert listing(client, "?range=1h&detector=duplicate_charge").ids == [alice]
    assert listing(client, "?severity=medium").ids == [invoice]  # a former level: its priority, P3
    # The level as the metric, the alerts and the dashboard's links label it.
    assert {(r["detector"], r["severity"], r["priority"]) for r in records} == {
        ("duplicate_charge", "critical", "P1"), ("negative_invoice", "warning", "P3")}
    assert listing(client, "?priority=P3").ids == listing(client, "?severity=warning").ids == [invoice]
    assert listing(client, "?priority=P1&severity=critical").ids == [alice, bob]
    assert listing(client, "?priority=P2").ids == listing(client, "?severity=info").ids == []
    assert listing(client, "?customer=cus_bob").ids == [bob]
    assert listing(client, "?livemode=true").ids == []
    assert listing(client, "?livemode=false&severity=critical").ids == [alice, bob]
    # Dates and datetimes as Grafana sends them (${__from:date:iso}); a date as `to` is its whole day.
    day = time.strftime("%Y-%m-%d", time.gmtime(now - 2 * 86400))
    assert listing(client, f"?from={day}&to={day}").ids == [bob]
    since = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - 3600))
    assert listing(client, f"?from={since}").ids == [invoice, alice]
    # An empty field is no filter (a form sends them all).
    assert listing(client, "?detector=&severity=&livemode=&customer=&range=&from=&to=&cursor=").ids == \
        [invoice, alice, bob]
    for bad, reason in (("detector=nope", "unknown detector"), ("severity=urgent", "severity must be"),
                        ("priority=P5", "priority must be one of P1, P2, P3, P4"),
                        ("livemode=yes", "livemode must be"), ("range=2d", "range must be"),
                        ("from=yesterday", "from must be an ISO 8601"), (f"from={day}&to=2000-01-01", "before to"),
                        ("cursor=../../etc", "cursor must be"), ("customer=" + "x" * 300, "customer must be")):
        answer = client.get("/anomalies?" + bad)
        assert answer.status_code == 400 and reason in answer.text, bad
        assert "Traceback" not in answer.text


def test_time_parsing() -> None:
    assert parse_time("2026-12-01", end=False) == 1796083200
    assert parse_time("2026-12-01", end=True) == 1796083200 + 86400
    assert parse_time("2026-12-01T10:00:00Z", end=False) == 1796083200 + 36000
    assert parse_time("2026-12-01T10:00:00.000+01:00", end=False) == 1796083200 + 32400
    assert parse_time("2026-12-01T10:00", end=False) == 1796083200 + 36000  # no offset: UTC
    assert parse_time("1796083200", end=False) is None and parse_time("x" * 100, end=False) is None


def test_cursor_paging_is_stable_under_new_anomalies(client: TestClient) -> None:
    now = int(time.time())
    for n in range(PAGE_SIZE + 5):
        negative_invoice(client, now - 1000 + n, n)
    first = listing(client)
    assert len(first.ids) == PAGE_SIZE and first.next is not None
    # New anomalies arrive at the top of the log while someone reads page 1.
    for n in range(100, 103):
        negative_invoice(client, now, n)
    second = listing(client, first.next.removeprefix("/anomalies"))
    assert len(second.ids) == 5 and second.next is None
    assert set(first.ids).isdisjoint(second.ids)
    everything = [anomaly_id(r) for r in client.get("/api/anomalies").json()["anomalies"]]
    assert everything[3:] == first.ids + second.ids  # exactly the older ones, in order, none twice
    # The filters ride along with the cursor.
    filtered = listing(client, "?detector=negative_invoice&range=24h")
    assert filtered.next is not None and "detector=negative_invoice" in filtered.next and "range=24h" in filtered.next
    # A cursor whose anomaly is no longer in the log: gone, start again.
    gone = client.get("/anomalies?cursor=negative_invoice-0123456789abcdef")
    assert gone.status_code == 410 and "start again" in gone.text


def test_anomaly_page_shows_who_how_much_the_events_and_the_rule(client: TestClient) -> None:
    now = int(time.time())
    duplicate(client, "cus_alice", now - 600)
    (record,) = client.get("/api/anomalies").json()["anomalies"]
    page = client.get(f"/anomalies/{anomaly_id(record)}")
    assert page.status_code == 200
    text = page.text
    assert "49.99 USD" in text and "Together: 99.98 USD" in text
    # Both charges, in event-time order, each with its payload one click away (Stripe) and its log line.
    events = re.findall(r'<tr class="event" data-event="([^"]+)"', text)
    assert events == ["evt_cus_alice_1", "evt_cus_alice_2"]
    for link in ("https://dashboard.stripe.com/test/customers/cus_alice",
                 "https://dashboard.stripe.com/test/payments/ch_cus_alice_1",
                 "https://dashboard.stripe.com/test/payments/ch_cus_alice_2",
                 "https://dashboard.stripe.com/test/events/evt_cus_alice_1", "/events?object=ch_cus_alice_1",
                 "/docs/runbooks/BillingAnomalyDetected.md"):
        assert link in text, link
    assert "window_seconds = 300" in text  # the threshold that fired
    # The event explorer links each anomaly it shows to this page.
    assert client.get("/events").text.count(f'href="/anomalies/{anomaly_id(record)}"') == 2  # beside both charges
    assert client.get("/anomalies/duplicate_charge-0000000000000000").status_code == 404
    assert client.get("/anomalies/not-an-id").status_code == 404


def test_live_anomaly_links_to_the_live_dashboard(make_client: Callable[..., TestClient]) -> None:
    client = make_client(webhook_secrets=("whsec_live_secret_not_a_placeholder_" + "a" * 20, SECRET))
    duplicate(client, "cus_live", int(time.time()) - 60, livemode=True)
    (record,) = client.get("/api/anomalies").json()["anomalies"]
    text = client.get(f"/anomalies/{anomaly_id(record)}").text
    assert "https://dashboard.stripe.com/payments/ch_cus_live_1" in text and "/test/" not in text


def test_same_anomaly_same_id_on_both_stores(redis_server: RedisServer,
                                             make_client: Callable[..., TestClient]) -> None:
    def ids(store: Store) -> list[str]:
        client = make_client(store=store)
        duplicate(client, "cus_alice", 1_790_000_000)
        negative_invoice(client, 1_790_000_100, 7)
        return [anomaly_id(r) for r in client.get("/api/anomalies").json()["anomalies"]]

    prefix = "t" + uuid.uuid4().hex[:12]
    on_redis = ids(RedisStore(redis_server.url, prefix=prefix))
    assert ids(MemoryStore()) == on_redis and len(set(on_redis)) == 2
    # A restart (a new process on the same Redis) finds the same page under the same id.
    restarted = make_client(store=RedisStore(redis_server.url, prefix=prefix))
    assert restarted.get(f"/anomalies/{on_redis[0]}").status_code == 200
    # A verdict is kept in Redis with the anomaly: another replica shows it.
    assert feedback(restarted, on_redis[0], "false_positive").status_code == 303
    replica = make_client(store=RedisStore(redis_server.url, prefix=prefix))
    assert "Marked <b>false positive</b>" in replica.get(f"/anomalies/{on_redis[0]}").text


def feedback(client: TestClient, anomaly: str, verdict: str, headers: dict[str, str] | None = None,
             ) -> Any:
    return client.post(f"/anomalies/{anomaly}/feedback", data={"verdict": verdict},
                       headers=SAME_ORIGIN if headers is None else headers, follow_redirects=False)


def counts(client: TestClient) -> dict[str, float]:
    samples = parse(client.get("/metrics").text)
    return {v: value(samples, "billingwatch_anomaly_feedback_total", detector="duplicate_charge", verdict=v)
            for v in ("expected", "false_positive")}


def test_verdicts_are_stored_shown_and_counted(store: Store, make_client: Callable[..., TestClient]) -> None:
    client = make_client(store=store)
    assert counts(client) == {"expected": 0, "false_positive": 0}  # at 0 before the first verdict
    duplicate(client, "cus_alice", int(time.time()) - 60)
    (record,) = client.get("/api/anomalies").json()["anomalies"]
    anomaly = anomaly_id(record)

    answer = feedback(client, anomaly, "false_positive")
    assert answer.status_code == 303 and answer.headers["location"] == f"/anomalies/{anomaly}"
    assert "Marked <b>false positive</b>" in client.get(f"/anomalies/{anomaly}").text
    assert f'data-id="{anomaly}"' in client.get("/anomalies").text and "verdict-false_positive" in \
        client.get("/anomalies").text
    assert counts(client) == {"expected": 0, "false_positive": 1}
    # The same verdict again changes nothing; a new one replaces it and counts once, under itself.
    assert feedback(client, anomaly, "false_positive").status_code == 303
    assert counts(client) == {"expected": 0, "false_positive": 1}
    assert feedback(client, anomaly, "expected").status_code == 303
    assert counts(client) == {"expected": 1, "false_positive": 1}
    assert "Marked <b>expected</b>" in client.get(f"/anomalies/{anomaly}").text

    assert feedback(client, anomaly, "maybe").status_code == 400
    assert feedback(client, "duplicate_charge-0000000000000000", "expected").status_code == 404
    assert counts(client) == {"expected": 1, "false_positive": 1}


@pytest.mark.parametrize("headers", [
    {},  # neither Sec-Fetch-Site nor Origin: refused by default
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "none"},
    {"Origin": "http://attacker.example"},
    {"Origin": "null"},
    {"Origin": "http://localhost.attacker.example"},
])
def test_cross_site_verdicts_are_refused(headers: dict[str, str], make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    duplicate(client, "cus_alice", int(time.time()) - 60)
    (record,) = client.get("/api/anomalies").json()["anomalies"]
    anomaly = anomaly_id(record)
    answer = feedback(client, anomaly, "false_positive", headers)
    assert answer.status_code == 403 and "cross-site" in answer.text
    assert counts(client) == {"expected": 0, "false_positive": 0}
    assert "No verdict yet" in client.get(f"/anomalies/{anomaly}").text
    # An older browser without Sec-Fetch-Site sends Origin: this host is taken.
    assert feedback(client, anomaly, "false_positive", {"Origin": "http://localhost"}).status_code == 303


@pytest.mark.parametrize("path", ["/", "/anomalies", "/anomalies/duplicate_charge-0000000000000000"])
def test_pages_have_the_access_rule_of_events(path: str, make_client: Callable[..., TestClient]) -> None:
    remote = make_client(peer="203.0.113.9")
    refused = remote.get(path)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert "cus_" not in refused.text
    posted = remote.post("/anomalies/duplicate_charge-0000000000000000/feedback", data={"verdict": "expected"},
                         headers=SAME_ORIGIN)
    assert posted.status_code == 401
    # Behind a proxy on loopback: not a local operator either.
    assert make_client().get(path, headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 401
    with_token = make_client(peer="203.0.113.9", api_token="page-token")
    assert with_token.get(path, headers={"Authorization": "Bearer page-token"}).status_code in (200, 404)
    assert with_token.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_pages_load_nothing_from_elsewhere(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    duplicate(client, "cus_alice", int(time.time()) - 60)
    (record,) = client.get("/api/anomalies").json()["anomalies"]
    for path in ("/", "/anomalies", f"/anomalies/{anomaly_id(record)}"):
        page = client.get(path)
        csp = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
        assert csp["default-src"] == "'none'" and csp["style-src"] == "'self'" and csp["form-action"] == "'self'"
        assert "script-src" not in csp and page.headers["cache-control"] == "no-store"
        parsed = Listing(page.text)
        assert not parsed.tags & {"script", "img", "iframe", "object", "embed", "style"}, path
        assert re.findall(r'<link rel="stylesheet" href="([^"]+)"', page.text) == ["/static/pages.css"]
        # Every link stays here, but for the Stripe Dashboard (a link to follow, nothing loaded).
        assert all(u.startswith("/") or u.startswith("https://dashboard.stripe.com/") or "/runbooks/" in u
                   for u in parsed.links), parsed.links
    css = client.get("/static/pages.css")
    assert css.headers["content-type"].startswith("text/css") and "prefers-color-scheme:dark" in css.text


def test_a_value_is_escaped_not_markup(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    duplicate(client, "<script>alert(1)</script>", int(time.time()) - 60)
    page = client.get("/anomalies").text
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
