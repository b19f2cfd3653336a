"""POST /api/import (issue 27): NDJSON of Stripe events recorded as history through the path of
`replay --direct`, each line its own case, 2xx only once every accepted line is recorded.

The real app in process, on the in-process store and a real redis-server (the `store` fixture).
"""

import json
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from billingwatch.fixtures import stripe_events as se
from billingwatch.http.import_api import MAX_IMPORT_BYTES, NDJSON
from billingwatch.store import RedisStore, Store
from testkit.processes import free_port
from tests.metrics import live_counts, scrape, total, value

URL = "/api/import"


def ndjson(*lines: Any) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


def post(client: TestClient, body: bytes, **headers: str) -> Any:
    return client.post(URL, content=body, headers={"Content-Type": NDJSON, **headers})


def imports(client: TestClient, result: str) -> float:
    return value(scrape(client), "billingwatch_import_requests_total", result=result)


def test_lines_are_recorded_as_history_bad_ones_listed_and_a_second_import_changes_nothing(
        store: Store, make_client: Callable[..., TestClient]) -> None:
    client = make_client(store=store)
    good = [se.event("charge.succeeded", se.charge(customer=f"cus_imp{i}")) for i in range(3)]
    body = ndjson(good[0], b"{not json", b"", good[1], {"object": "customer", "id": "cus_x"}, good[2], good[0])
    response = post(client, body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "lines": 6, "recorded": 3, "duplicate": 1, "invalid": 2, "anomalies": 0,
        "errors": [{"line": 2, "error": "not JSON"},
                   {"line": 5, "error": 'not a Stripe event (object must be "event")'}],
    }
    figures = scrape(client)
    assert total(figures, "billingwatch_history_events_total", type="charge.succeeded") == 3
    assert {k: v for k, v in live_counts(figures).items() if v} == {}  # history: no live counter moved
    assert value(figures, "billingwatch_import_requests_total", result="imported") == 1

    again = post(client, body)
    assert again.status_code == 200
    assert (again.json()["recorded"], again.json()["duplicate"], again.json()["invalid"]) == (0, 4, 2)
    assert total(scrape(client), "billingwatch_history_events_total", type="charge.succeeded") == 3


def test_refusals_say_why_in_one_line_are_counted_and_record_nothing(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    one = ndjson(se.event("charge.succeeded", se.charge()))
    wrong_type = client.post(URL, content=one, headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415 and wrong_type.json() == {"error": f"Content-Type must be {NDJSON}"}
    too_large = post(client, b" " * (MAX_IMPORT_BYTES + 1))
    assert too_large.status_code == 413 and "larger than" in too_large.json()["error"]
    stranger = make_client(peer="203.0.113.9")
    assert post(stranger, one).status_code == 401
    assert imports(client, "unsupported_media_type") == 1 and imports(client, "too_large") == 1
    assert imports(stranger, "unauthorized") == 1
    assert total(scrape(client), "billingwatch_history_events_total") == 0


def test_with_a_token_the_bearer_is_needed_even_on_loopback(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_token="s3cret-token")
    one = ndjson(se.event("charge.succeeded", se.charge()))
    assert post(client, one).status_code == 401
    assert post(client, one, Authorization="Bearer s3cret-token").json()["recorded"] == 1


def test_livemode_lines_are_refused_where_only_test_mode_is_allowed(make_client: Callable[..., TestClient]) -> None:
    client = make_client(webhook_secrets=("whsec_replace_me",))  # a placeholder: test mode only
    live = se.event("charge.succeeded", se.charge(), livemode=True)
    answer = post(client, ndjson(live, se.event("charge.succeeded", se.charge()))).json()
    assert (answer["recorded"], answer["invalid"]) == (1, 1)
    assert answer["errors"][0]["line"] == 1 and "livemode" in answer["errors"][0]["error"]


def test_a_store_that_is_down_is_answered_503_so_the_chunk_is_sent_again(
        make_client: Callable[..., TestClient]) -> None:
    down = RedisStore(f"redis://127.0.0.1:{free_port()}/0", prefix="down")
    client = make_client(store=down)
    response = post(client, ndjson(se.event("charge.succeeded", se.charge())))
    assert response.status_code == 503 and "send the whole chunk again" in response.json()["error"]
    assert imports(client, "store_unavailable") == 1


@pytest.mark.parametrize("line", [b"[1, 2]", b"\xff\xfe", b"[" * 5000, b'{"object": "event"}'])
def test_odd_lines_are_invalid_with_a_reason_never_a_500(line: bytes, make_client: Callable[..., TestClient]) -> None:
    response = post(make_client(), ndjson(line))
    assert response.status_code == 200
    assert response.json()["invalid"] == 1 and response.json()["errors"][0]["line"] == 1
