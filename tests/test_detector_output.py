"""Issue 22 item 5: one bad detector output fails nothing but that detector's checks on that event.

A plugin detector that puts a datetime into its anomaly `details` (a real installed distribution,
loaded by `billingwatch serve` from its entry point) among 50 concurrent deliveries: every
delivery is answered 200, the plugin's event is recorded without its checks, and
billingwatch_detector_errors_total{detector="big_charge"} counts it; /api/anomalies keeps
answering on both stores. Underneath: a plan that cannot be encoded (one that bypassed that
check) fails alone in a group-commit batch, on both stores, and nothing is written for it.
"""

import asyncio
import dataclasses
import datetime
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from billingwatch.detectors import Context, Severity, build_detectors
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.events import Event, parse_event
from billingwatch.recording.plan import Anomaly, Check, plan_event
from billingwatch.store import Outcome, Store, Unrecordable
from testkit import processes
from testkit.processes import Exporter, RedisServer
from tests.conftest import ROOT, SECRET
from tests.metrics import scrape, value
from tests.recording import DEDUP_TTL, SUBSCRIPTION_TTL, figures

BIG = 100_000  # minor units: the plugin's threshold
PLUGIN = '''
import datetime
from dataclasses import dataclass
from typing import ClassVar
from billingwatch.detectors.base import Context, anomaly
from billingwatch.recording.events import Event
from billingwatch.recording.plan import Check


@dataclass(frozen=True)
class BigCharge:
    name: ClassVar[str] = "big_charge"
    severity: ClassVar[str] = "low"
    description: ClassVar[str] = "A charge of 1,000.00 or more (its details carry a datetime: a bug)."
    event_types: ClassVar[frozenset[str]] = frozenset({"charge.succeeded"})

    def checks(self, event: Event, context: Context) -> list[Check]:
        if int(event.object.get("amount", 0)) < 100000:
            return []
        found = anomaly(self, event, "a big charge", details={"seen_at": datetime.datetime.now()})
        return [Check(op="once", key="big:" + event.id, ttl=context.state_ttl, anomaly=found)]
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin as pip would leave an installed distribution: its module and dist-info."""
    root = tmp_path_factory.mktemp("site")
    module = "bwplugin_big_" + uuid.uuid4().hex[:8]
    (root / f"{module}.py").write_text(PLUGIN)
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[billingwatch.detectors]\nbig_charge = {module}:BigCharge\n")
    return root


@pytest.fixture(params=["memory", "redis"])
def exporter(request: pytest.FixtureRequest, plugin_site: Path) -> Iterator[Exporter]:
    env = {"PYTHONPATH": os.pathsep.join((str(plugin_site), str(ROOT)))}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        env.update(REDIS_URL=server.url, BILLINGWATCH_REDIS_PREFIX="t" + uuid.uuid4().hex[:12])
    with processes.running_exporter(SECRET, **env) as running:
        yield running


async def deliver_together(url: str, events: list[dict[str, Any]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        async def post(evt: dict[str, Any]) -> httpx.Response:
            payload = se.body(evt)
            return await client.post("/webhooks/stripe", content=payload, headers=se.signed_headers(payload, SECRET))

        return list(await asyncio.gather(*(post(evt) for evt in events)))


def test_a_plugin_with_a_datetime_in_its_details_fails_only_its_own_checks(exporter: Exporter) -> None:
    ordinary = [se.event("charge.succeeded", se.charge(charge_id=f"ch_ok{i}", customer=f"cus_ok{i}", amount=1000 + i))
                for i in range(50)]
    big = se.event("charge.succeeded", se.charge(charge_id="ch_big", customer="cus_big", amount=BIG))
    events = [*ordinary[:25], big, *ordinary[25:]]
    answers = asyncio.run(deliver_together(exporter.url, events))
    assert [a.status_code for a in answers] == [200] * 51, [a.text for a in answers if a.status_code != 200]
    assert all(a.json()["duplicate"] is False for a in answers)

    samples = scrape(exporter.url)
    assert value(samples, "billingwatch_charges_total", status="succeeded", currency="usd", livemode="false") == 51
    assert value(samples, "billingwatch_detector_errors_total", detector="big_charge") == 1
    assert value(samples, "billingwatch_anomalies_total", detector="big_charge", severity="info", priority="P4",
                 livemode="false") == 0
    listed = httpx.get(exporter.url + "/api/anomalies", timeout=10)
    assert listed.status_code == 200 and not [r for r in listed.json()["anomalies"] if r["detector"] == "big_charge"]
    again = asyncio.run(deliver_together(exporter.url, [big]))  # Stripe's retry would be a duplicate
    assert again[0].status_code == 200 and again[0].json()["duplicate"] is True


def unencodable(plan_of: Any) -> Any:
    """A plan carrying a check whose anomaly details hold a datetime (as if it bypassed the guard)."""
    bad = Anomaly(detector="duplicate_charge", severity="critical", livemode=False, event_id=plan_of.event_id,
                  event_type="charge.succeeded", event_created=int(time.time()), summary="bad",
                  details={"at": datetime.datetime.now(tz=datetime.UTC)})
    return dataclasses.replace(plan_of, checks=[Check(op="once", key="bad:" + plan_of.event_id, ttl=60,
                                                      anomaly=bad)])


@pytest.mark.anyio
async def test_an_unencodable_plan_fails_alone_in_a_batch(store: Store) -> None:
    detectors = build_detectors({})
    now = time.time()
    plans = [plan_event(parse_event(se.event("charge.succeeded", se.charge(charge_id=f"ch_b{i}",
                                                                           customer=f"cus_b{i}"))),
                        received_at=now, detectors=detectors, context=Context(state_ttl=DEDUP_TTL), dedup_ttl=DEDUP_TTL,
                        subscription_ttl=SUBSCRIPTION_TTL)
             for i in range(3)]
    plans[1] = unencodable(plans[1])
    results = await store.apply_many(plans)
    assert isinstance(results[0], Outcome) and isinstance(results[2], Outcome)
    assert isinstance(results[1], Unrecordable)
    assert (await store.recorded([(p.event_id, "false") for p in plans])) == [True, False, True]
    assert await store.anomalies(100) == []
    samples = await figures(store)
    assert value(samples, "billingwatch_charges_total", status="succeeded", currency="usd", livemode="false") == 2


@dataclasses.dataclass(frozen=True)
class Returns:
    """A detector returning whatever `output(event)` builds."""

    name: ClassVar[str] = "returns"
    severity: ClassVar[Severity] = "low"
    description: ClassVar[str] = "Returns what the test gives it."
    event_types: ClassVar[frozenset[str]] = frozenset({"charge.succeeded"})
    output: Callable[[Event], Any] = lambda event: []

    def checks(self, event: Event, context: Context) -> Any:
        return self.output(event)


def found(event: Event, **details: Any) -> Anomaly:
    return Anomaly(detector="returns", severity="low", livemode=False, event_id=event.id, event_type=event.type,
                   event_created=event.created, summary="found", details=details)


@pytest.mark.parametrize("output", [
    lambda e: [Check(op="once", key="k:" + e.id, ttl=60, anomaly=found(e, ratio=float("nan")))],
    lambda e: [Check(op="once", key="k:" + e.id, ttl=60, anomaly=found(e, pair={(1, 2): "tuple key"}))],
    lambda e: [Check(op="once", key="k:" + e.id, ttl=60, anomaly=found(e, at=datetime.date(2026, 1, 1)))],
    lambda e: [Check(op="once", key="k:" + e.id, ttl="60")],  # type: ignore[arg-type]
    lambda e: [Check(op="twice", key="k:" + e.id, ttl=60)],  # type: ignore[arg-type]
    lambda e: [{"op": "once"}],
    lambda e: None,
], ids=["nan", "tuple-key", "date", "text-ttl", "unknown-op", "dict", "none"])
def test_each_bad_output_fails_its_detector_alone(output: Callable[[Event], Any]) -> None:
    event = parse_event(se.event("charge.succeeded", se.charge(charge_id="ch_out", customer="cus_out")))
    detectors = [*build_detectors({}), Returns(output)]
    plan = plan_event(event, received_at=time.time(), detectors=detectors, context=Context(state_ttl=DEDUP_TTL),
                      dedup_ttl=DEDUP_TTL, subscription_ttl=SUBSCRIPTION_TTL)
    assert plan.failed_detectors == ("returns",)
    assert not [c for c in plan.checks if c.key.startswith("k:")]
    assert plan.checks  # the built-in detectors' checks stay


def test_good_details_become_plain_json_as_both_stores_keep_them() -> None:
    event = parse_event(se.event("charge.succeeded", se.charge(charge_id="ch_json", customer="cus_json")))
    detector = Returns(lambda e: [Check(op="once", key="k:" + e.id, ttl=60, anomaly=found(e, pair=(1, 2), n={1: 2}))])
    plan = plan_event(event, received_at=time.time(), detectors=[detector], context=Context(state_ttl=DEDUP_TTL),
                      dedup_ttl=DEDUP_TTL, subscription_ttl=SUBSCRIPTION_TTL)
    assert plan.failed_detectors == ()
    (check,) = plan.checks
    assert check.anomaly is not None and check.anomaly.details == {"pair": [1, 2], "n": {"1": 2}}
