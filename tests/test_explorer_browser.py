"""The /events explorer in a real headless Chromium (Debian `chromium`), against a real
`billingwatch serve` after a scenario of signed events: what a person checks on the page.

The screenshots are kept under pytest's tmp_path (CI keeps them as artefacts), not in the repo.
"""

import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from billingwatch.fixtures import stripe_events as se
from tests.conftest import SECRET, running_exporter

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed "
                                                         "(scripts/test.sh installs it)")


def chromium(profile: Path, *args: str) -> str:
    """Run headless Chromium once; its stdout. A profile of its own: runs in parallel never meet."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--disable-background-networking", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]  # a D-Bus error line on stderr is harmless
    return done.stdout


class Dom(HTMLParser):
    """The rendered page as a person reads it: the event rows (their event id, customer and the
    anomalies shown beside them) and every URL the page would load or link to."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        self.urls += [a[k] for k in ("src", "href", "action", "srcset", "poster", "data") if k in a]
        if tag == "tr" and "event" in a.get("class", "").split():
            self.rows.append({"event": a["data-event"], "customer": a["data-customer"], "anomalies": []})
        elif tag == "div" and "anomaly" in a.get("class", "").split() and self.rows:
            self.rows[-1]["anomalies"].append(a["data-detector"])


def dom(profile: Path, url: str) -> Dom:
    parsed = Dom()
    parsed.feed(chromium(profile, "--dump-dom", url))
    return parsed


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def post(url: str, evt: dict[str, Any]) -> httpx.Response:
    payload = se.body(evt)
    return httpx.post(url + "/webhooks/stripe", content=payload, headers=se.signed_headers(payload, SECRET),
                      timeout=10)


def charge(customer: str, charge_id: str, created: int, amount: int = 4999) -> dict[str, Any]:
    return se.event("charge.succeeded", se.charge(customer=customer, charge_id=charge_id, amount=amount),
                    event_id=f"evt_{charge_id}", created=created)


def scenario(url: str, now: int) -> None:
    """Alice is charged twice for the same amount (a duplicate pair); Bob and Carol pay normally;
    Bob's invoice is paid and Stripe redelivers his charge."""
    events = [
        charge("cus_carol", "ch_c1", now - 300, 1200),
        charge("cus_alice", "ch_a1", now - 120),
        charge("cus_bob", "ch_b1", now - 100, 1500),
        charge("cus_alice", "ch_a2", now - 90),
        se.event("invoice.paid", se.invoice(customer="cus_bob", invoice_id="in_b1"), event_id="evt_in_b1"),
        charge("cus_bob", "ch_b1", now - 100, 1500),
    ]
    for evt in events:
        assert post(url, evt).status_code == 200


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_explorer_in_a_real_browser(store: str, tmp_path: Path, request: pytest.FixtureRequest, now: int) -> None:
    env = {"REDIS_URL": request.getfixturevalue("redis_server").url,
           "BILLINGWATCH_REDIS_PREFIX": f"browser{now}"} if store == "redis" else {}
    with running_exporter(**env) as exporter:
        scenario(exporter.url, now)
        page = exporter.url + "/events"
        screenshot = tmp_path / "events.png"
        chromium(tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,900", page)
        assert png_size(screenshot) == (1280, 900)  # the CI artefact: the page as a laptop shows it
        everything = dom(tmp_path / "profile", page)
        narrowed = dom(tmp_path / "profile", page + "?customer=cus_alice")
        chromium(tmp_path / "profile", f"--screenshot={tmp_path / 'events-alice.png'}", "--window-size=1280,900",
                 page + "?customer=cus_alice")

    # The scenario's rows, newest first (the redelivery shows as a duplicate).
    assert [r["event"] for r in everything.rows] == ["evt_ch_b1", "evt_in_b1", "evt_ch_a2", "evt_ch_b1",
                                                     "evt_ch_a1", "evt_ch_c1"]
    # The duplicate-charge anomaly beside both of Alice's charges, and nowhere else.
    beside = {r["event"]: r["anomalies"] for r in everything.rows}
    assert beside["evt_ch_a1"] == beside["evt_ch_a2"] == ["duplicate_charge"]
    assert [r for r in everything.rows if r["anomalies"] and r["customer"] != "cus_alice"] == []
    # The customer filter narrows to one customer.
    assert [(r["event"], r["customer"]) for r in narrowed.rows] == [("evt_ch_a2", "cus_alice"),
                                                                   ("evt_ch_a1", "cus_alice")]
    # No request leaves loopback: no script, no stylesheet or image from elsewhere, every URL local.
    for parsed in (everything, narrowed):
        assert not parsed.tags & {"script", "link", "img", "iframe", "object", "embed"}, parsed.tags
        assert parsed.urls and all(u.startswith("/") and not u.startswith("//") for u in parsed.urls), parsed.urls
