"""The home page and the /anomalies pages in a real headless Chromium, driven over the DevTools
protocol (clicks, a phone-sized viewport, dark mode), against a real `billingwatch serve` fed
signed webhooks: a duplicate charge -> the home page shows it -> its page lists both charges,
the amount and the Stripe Dashboard links -> marked "false positive" by a click -> the feedback
counter moved. A cross-site form is refused; nothing is loaded from another host.

Screenshots go to tmp_path (CI artefacts); with BILLINGWATCH_SCREENSHOTS=docs/screenshots they are
also written there, as docs/pages.md shows them (the Redis run).
"""

import base64
import contextlib
import itertools
import json
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from billingwatch.fixtures import stripe_events as se
from billingwatch.http.anomaly_query import PAGE_SIZE
from testkit.browser import CHROMIUM_SERVICES, Recorder, host
from testkit.processes import wait_until
from tests.conftest import SECRET, running_exporter
from tests.metrics import scrape, value

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed")
LAPTOP = (1280, 900)
PHONE = (375, 812)


class Browser:
    """One headless Chromium and one tab, over the DevTools protocol (a websocket)."""

    def __init__(self, profile: Path, proxy_port: int) -> None:
        assert CHROMIUM is not None
        self._log = (profile.parent / "chromium.log").open("wb")
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--hide-scrollbars", "--disable-features=AutofillServerCommunication",
             f"--user-data-dir={profile}",
             f"--proxy-server=http://127.0.0.1:{proxy_port}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self._log)
        active = profile / "DevToolsActivePort"
        wait_until(lambda: active.exists() and len(active.read_text().split()) == 2, timeout=60, what="chromium")
        port, path = active.read_text().split()
        self._closing = contextlib.ExitStack()
        self._ws: ClientConnection = self._closing.enter_context(
            connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30))
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self._session: str | None = None
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Log", "Runtime"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        self._ws.send(json.dumps(message))
        while True:
            reply = json.loads(self._ws.recv(timeout=60))
            if reply.get("id") == call_id:
                assert "error" not in reply, (method, reply["error"])
                result: dict[str, Any] = reply["result"]
                return result
            self.events.append(reply)

    def _wait_for_load(self, since: int) -> None:
        deadline = time.monotonic() + 30
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events[since:]):
            assert time.monotonic() < deadline, "page did not load"
            self.events.append(json.loads(self._ws.recv(timeout=30)))

    def open(self, url: str) -> None:
        since = len(self.events)
        self.send("Page.navigate", url=url)
        self._wait_for_load(since)

    def js(self, expression: str) -> Any:
        """Evaluate in the page (DevTools is not bound by the page's CSP: the page itself runs none)."""
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def click(self, selector: str) -> None:
        """Click an element that navigates (a link, a form button), and wait for the new page."""
        since = len(self.events)
        assert self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                       "if (!e) return false; e.click(); return true; })()"), selector
        self._wait_for_load(since)

    def viewport(self, size: tuple[int, int], dark: bool = False) -> None:
        width, height = size
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=width < 600)
        self.send("Emulation.setEmulatedMedia",
                  features=[{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}])

    def screenshot(self, path: Path) -> None:
        """The whole page (up to 2400 px tall) at the viewport's width."""
        width = self.js("document.documentElement.clientWidth")
        height = min(2400, self.js("document.documentElement.scrollHeight"))
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))

    def logged(self) -> list[str]:
        return [e["params"]["entry"]["text"] for e in self.events if e.get("method") == "Log.entryAdded"]

    def close(self) -> None:
        self._closing.close()
        self.process.terminate()
        self.process.wait(15)
        self._log.close()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def post(url: str, evt: dict[str, Any]) -> None:
    payload = se.body(evt)
    answer = httpx.post(url + "/webhooks/stripe", content=payload, headers=se.signed_headers(payload, SECRET),
                        timeout=10)
    assert answer.status_code == 200, answer.text


def scenario(url: str, now: int) -> None:
    """Carol and Bob pay normally, Bob's invoice goes negative, and Alice is charged twice for the same amount."""
    def charge(customer: str, charge_id: str, ago: int, amount: int) -> dict[str, Any]:
        return se.event("charge.succeeded", se.charge(customer=customer, charge_id=charge_id, amount=amount),
                        event_id=f"evt_{charge_id}", created=now - ago)

    for evt in (charge("cus_carol", "ch_3carol1", 900, 1200), charge("cus_bob", "ch_3bob1", 700, 1500),
                se.event("invoice.finalized", se.invoice(total=-2500, customer="cus_bob", billing_reason="manual",
                                                         invoice_id="in_1bobneg", subscription=None),
                         event_id="evt_in_1bobneg", created=now - 400),
                charge("cus_alice", "ch_3alice1", 200, 4999), charge("cus_alice", "ch_3alice2", 140, 4999)):
        post(url, evt)


def feedback(url: str) -> dict[str, float]:
    samples = scrape(url)
    return {v: value(samples, "billingwatch_anomaly_feedback_total", detector="duplicate_charge", verdict=v)
            for v in ("expected", "false_positive")}


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_from_the_home_page_to_the_proof_and_a_verdict(store: str, tmp_path: Path, outside: Recorder,
                                                       request: pytest.FixtureRequest) -> None:
    env = {"REDIS_URL": request.getfixturevalue("redis_server").url,
           "BILLINGWATCH_REDIS_PREFIX": request.getfixturevalue("redis_prefix")} if store == "redis" else {}
    shots = tmp_path / "shots"
    shots.mkdir()
    now = int(time.time())
    with running_exporter(**env) as exporter:
        scenario(exporter.url, now)
        assert feedback(exporter.url) == {"expected": 0, "false_positive": 0}  # also: Prometheus scraped once
        (profile := tmp_path / "profile").mkdir()
        browser = Browser(profile, outside.server_address[1])
        try:
            browser.viewport(LAPTOP)
            # The home page: the anomaly of the last 24 h, by detector, with its link.
            browser.open(exporter.url + "/")
            home = browser.js("document.body.innerText")
            assert "duplicate_charge 1" in home and "negative_invoice 1" in home, home
            assert "a Stripe signing secret" in home and "last scrape of /metrics" in home
            assert "test mode: 5 test event(s) in the log, no live one" in home
            assert "charge.succeeded 4" in home and "invoice.finalized 1" in home
            browser.screenshot(shots / "home.png")
            browser.click('a.detector[data-detector="duplicate_charge"]')
            assert browser.js("location.search") == "?detector=duplicate_charge&range=24h"
            assert browser.js("document.querySelectorAll('li.anomaly').length") == 1
            browser.open(exporter.url + "/anomalies")
            browser.screenshot(shots / "anomalies.png")

            # Its page: both charges in event-time order, the amount, the Stripe Dashboard links.
            browser.click('li.anomaly[data-detector="duplicate_charge"] a.summary')
            assert browser.js("document.querySelector('#amount').innerText") == "49.99 USD"
            assert browser.js("[...document.querySelectorAll('tr.event')].map(r => r.dataset.event)") == \
                ["evt_ch_3alice1", "evt_ch_3alice2"]
            assert browser.js("document.querySelector('#totals').innerText") == "Together: 99.98 USD"
            links = browser.js("[...document.querySelectorAll('a')].map(a => a.href)")
            for link in ("https://dashboard.stripe.com/test/payments/ch_3alice1",
                         "https://dashboard.stripe.com/test/payments/ch_3alice2",
                         "https://dashboard.stripe.com/test/customers/cus_alice",
                         "https://dashboard.stripe.com/test/events/evt_ch_3alice2"):
                assert link in links, link
            anomaly_url = browser.js("location.href")
            browser.screenshot(shots / "anomaly.png")

            # "False positive", clicked: stored, shown, counted.
            browser.click('form.verdict button[value="false_positive"]')
            assert browser.js("location.href") == anomaly_url  # post, redirect, get
            assert "Marked false positive" in browser.js("document.querySelector('#verdict').innerText")
            assert feedback(exporter.url) == {"expected": 0, "false_positive": 1}

            # A phone: nothing wider than the screen; then dark mode.
            browser.viewport(PHONE)
            browser.open(anomaly_url)
            assert browser.js("document.documentElement.scrollWidth") <= PHONE[0]
            browser.screenshot(shots / "anomaly-375.png")
            browser.open(exporter.url + "/")
            assert browser.js("document.documentElement.scrollWidth") <= PHONE[0]
            browser.screenshot(shots / "home-375.png")
            browser.viewport(LAPTOP, dark=True)
            browser.open(anomaly_url)
            assert browser.js("getComputedStyle(document.body).backgroundColor") == "rgb(21, 23, 26)"
            browser.screenshot(shots / "anomaly-dark.png")
            browser.viewport(LAPTOP)

            # A page of another site posting the same form: refused, nothing counted.
            form = (f'<form method="post" action="{anomaly_url}/feedback"><button name="verdict" '
                    'value="expected">go</button></form>')
            browser.open("data:text/html," + quote(form))
            browser.click("button")
            assert "cross-site" in browser.js("document.body.innerText")
            assert feedback(exporter.url) == {"expected": 0, "false_positive": 1}

            # Paging: more anomalies than a page, "Older" to the rest.
            for n in range(PAGE_SIZE + 3):
                post(exporter.url, se.event("invoice.finalized", se.invoice(
                    total=-100 - n, billing_reason="manual", invoice_id=f"in_page{n}", subscription=None),
                    event_id=f"evt_page{n}", created=now - 60))
            browser.open(exporter.url + "/anomalies?detector=negative_invoice")
            first = browser.js("[...document.querySelectorAll('li.anomaly')].map(e => e.dataset.id)")
            browser.click('a[rel="next"]')
            second = browser.js("[...document.querySelectorAll('li.anomaly')].map(e => e.dataset.id)")
            assert (len(first), len(second)) == (PAGE_SIZE, 4) and not set(first) & set(second)
            assert "detector=negative_invoice" in browser.js("location.search")
            logged = browser.logged()
        finally:
            browser.close()

    assert not [line for line in logged if "Content Security Policy" in line], logged
    assert {host(r) for r in outside.requests} <= CHROMIUM_SERVICES, outside.requests
    for name, size in (("home.png", LAPTOP), ("anomaly.png", LAPTOP), ("anomaly-375.png", PHONE),
                       ("anomaly-dark.png", LAPTOP)):
        width, height = png_size(shots / name)
        assert width == size[0] and height >= 400, (name, width, height)
    keep = os.environ.get("BILLINGWATCH_SCREENSHOTS")
    if keep and store == "redis":
        for shot in shots.iterdir():
            shutil.copy(shot, Path(keep) / shot.name)
