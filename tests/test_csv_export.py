"""`?format=csv` on /api/anomalies and /api/events (issue 24, "Export"): against a real
`billingwatch serve`, the CSV read back by Python's csv module is the JSON, row for row, with
the same filters; a download file name; formula-looking text defused."""

import csv
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from billingwatch.fixtures import stripe_events as se
from billingwatch.http.csv_export import ANOMALY_COLUMNS, EVENT_COLUMNS
from testkit.processes import Exporter
from tests.conftest import SECRET, running_exporter

TOKEN = "csv-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FORMULA_CUSTOMER = "=HYPERLINK(\"http://attacker.example\",\"x\")"


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    with running_exporter(BILLINGWATCH_API_TOKEN=TOKEN) as running:
        deliveries = [
            se.event("charge.succeeded", se.charge(customer="cus_csv", amount=1250, currency="eur")),
            se.event("charge.succeeded", se.charge(customer="cus_csv", amount=1250, currency="eur")),  # duplicate
            se.event("charge.failed", se.charge(status="failed", customer="cus_other")),
            se.event("charge.succeeded", se.charge(customer=FORMULA_CUSTOMER, amount=700)),
        ]
        for evt in deliveries:
            payload = se.body(evt)
            answer = httpx.post(running.url + "/webhooks/stripe", content=payload,
                                headers=se.signed_headers(payload, SECRET))
            assert answer.status_code == 200, answer.text
        yield running


def expected_cell(value: Any) -> str:
    """The documented cell encoding (http/csv_export.py), written out independently here."""
    if value is None:
        return ""
    if value is True or value is False:
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def both(exporter: Exporter, path: str, kind: str, **params: str) -> tuple[list[dict[str, Any]], httpx.Response]:
    as_json = httpx.get(exporter.url + path, params=params, headers=AUTH)
    assert as_json.status_code == 200, as_json.text
    as_csv = httpx.get(exporter.url + path, params={**params, "format": "csv"}, headers=AUTH)
    assert as_csv.status_code == 200, as_csv.text
    rows: list[dict[str, Any]] = as_json.json()[kind]
    return rows, as_csv


def read_back(response: httpx.Response) -> tuple[list[str], list[dict[str, str]]]:
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "\r\n" in response.text and "\n" not in response.text.replace("\r\n", "")  # RFC 4180 line ends
    reader = csv.DictReader(io.StringIO(response.text, newline=""))
    return list(reader.fieldnames or []), list(reader)


def assert_same(rows: list[dict[str, Any]], header: list[str], read: list[dict[str, str]]) -> None:
    assert len(read) == len(rows) and rows
    assert set(header) >= {key for row in rows for key in row}  # no key of the JSON left out
    for row, line in zip(rows, read, strict=True):
        assert line == {name: expected_cell(row.get(name)) for name in header}


@pytest.mark.parametrize("params", [{}, {"detector": "duplicate_charge"}, {"history": "false", "limit": "1"}])
def test_anomalies_csv_is_the_json(exporter: Exporter, params: dict[str, str]) -> None:
    rows, response = both(exporter, "/api/anomalies", "anomalies", **params)
    header, read = read_back(response)
    assert header[:len(ANOMALY_COLUMNS)] == list(ANOMALY_COLUMNS)
    assert_same(rows, header, read)
    assert re.fullmatch(r'attachment; filename="billingwatch-anomalies-[0-9]{8}T[0-9]{6}Z\.csv"',
                        response.headers["content-disposition"])
    duplicate = next(line for line in read if line["detector"] == "duplicate_charge")
    assert (duplicate["amount"], duplicate["currency"], duplicate["customer"]) == ("1250", "eur", "cus_csv")


@pytest.mark.parametrize("params", [{}, {"customer": "cus_csv"}, {"type": "charge.failed"}, {"limit": "2"}])
def test_events_csv_is_the_json(exporter: Exporter, params: dict[str, str]) -> None:
    rows, response = both(exporter, "/api/events", "events", **params)
    header, read = read_back(response)
    assert header[:len(EVENT_COLUMNS)] == list(EVENT_COLUMNS)
    assert_same(rows, header, read)
    assert 'filename="billingwatch-events-' in response.headers["content-disposition"]


def test_formula_text_is_defused_in_csv_only(exporter: Exporter) -> None:
    rows, response = both(exporter, "/api/events", "events", customer=FORMULA_CUSTOMER)
    _, read = read_back(response)
    assert [row["customer"] for row in rows] == [FORMULA_CUSTOMER]
    assert [line["customer"] for line in read] == ["'" + FORMULA_CUSTOMER]


def test_csv_keeps_the_access_rules_and_refuses_an_unknown_format(exporter: Exporter) -> None:
    for path in ("/api/anomalies", "/api/events"):
        bad = httpx.get(exporter.url + path, params={"format": "xlsx"}, headers=AUTH)
        assert bad.status_code == 400 and bad.json() == {"error": "format must be json or csv"}
        refused = httpx.get(exporter.url + path, params={"format": "csv"})  # no token
        assert refused.status_code == 401 and "cus_" not in refused.text
