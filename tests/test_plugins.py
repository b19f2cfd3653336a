"""Detector plugins: the example package installed for real and firing through `billingwatch serve`
on both stores, and each way a plugin can be wrong as a one-line start-up error.

The example is pip-installed into a temporary target directory (never into this environment),
which only the exporter processes started here get on their PYTHONPATH; the start-up error cases
write real installed-distribution metadata (dist-info with entry_points.txt) into a temporary
directory put on sys.path for one test. Nothing outlives its test.
"""

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from billingwatch.config import ConfigError
from billingwatch.detectors import REGISTRY, build_detectors
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.recorder import Recorder
from billingwatch.store import Store
from testkit import processes
from testkit.processes import Exporter, RedisServer
from tests.conftest import ROOT, SECRET
from tests.metrics import anomalies, scrape, value
from tests.recording import DEDUP_TTL, SUBSCRIPTION_TTL, figures

EXAMPLE = ROOT / "examples" / "billingwatch-detector-example"
BUILT_IN = [cls.name for cls in REGISTRY]


@pytest.fixture(scope="module")
def example_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin pip-installed (offline, from a copy: the build writes next to its sources)."""
    source = tmp_path_factory.mktemp("example-src") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source)
    target = tmp_path_factory.mktemp("example-target")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        check=True, capture_output=True,
    )
    assert (target / "billingwatch_detector_example-0.1.0.dist-info" / "entry_points.txt").is_file()
    return target


def failed_payment(intent_id: str, fingerprint: str, created: int, customer: str | None = None) -> dict[str, Any]:
    """payment_intent.payment_failed as Stripe sends it: last_payment_error carries the card tried."""
    intent = se.payment_intent(charge_id=f"ch_{fingerprint}", intent_id=intent_id, customer=customer, created=created)
    intent.update(status="requires_payment_method", amount_received=0, last_payment_error={
        "type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
        "message": "Your card was declined.", "charge": f"ch_{fingerprint}",
        "payment_method": {"id": f"pm_{fingerprint}", "object": "payment_method", "type": "card",
                           "card": {"brand": "visa", "last4": "4242", "fingerprint": fingerprint}},
    })
    return se.event("payment_intent.payment_failed", intent, created=created)


def post(exporter: Exporter, evt: dict[str, Any]) -> dict[str, Any]:
    payload = se.body(evt)
    response = httpx.post(exporter.url + "/webhooks/stripe", content=payload,
                          headers=se.signed_headers(payload, SECRET), timeout=10)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def card_testing_count(exporter: Exporter) -> float:
    return value(scrape(exporter.url), "billingwatch_anomalies_total",
                 detector="card_testing", severity="warning", priority="P2", livemode="false")


def events_counted(exporter: Exporter) -> float:
    return value(scrape(exporter.url), "billingwatch_events_total", type="payment_intent.payment_failed",
                 livemode="false")


@pytest.fixture(params=["memory", "redis"])
def replicas(request: pytest.FixtureRequest, example_target: Path) -> Iterator[list[Exporter]]:
    """Exporters with the example plugin on their path: one on the in-process store, two sharing Redis."""
    env = {"PYTHONPATH": os.pathsep.join((str(example_target), str(ROOT)))}
    count = 1
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        env.update(REDIS_URL=server.url, BILLINGWATCH_REDIS_PREFIX="t" + uuid.uuid4().hex[:12])
        count = 2
    with ExitStack() as stack:
        yield [stack.enter_context(processes.running_exporter(SECRET, **env)) for _ in range(count)]


def test_installed_plugin_is_listed_exposed_at_zero_and_fires_once_across_replicas_and_redeliveries(
    replicas: list[Exporter],
) -> None:
    first, last = replicas[0], replicas[-1]
    listed = httpx.get(first.url + "/api/detectors", timeout=10).json()["detectors"]
    assert [d["name"] for d in listed] == [*BUILT_IN, "card_testing"]
    assert listed[-1] == {
        "name": "card_testing", "severity": "warning", "severities": ["warning"], "priority": "P2",
        "priorities": ["P2"], "description": listed[-1]["description"],
        "event_types": ["payment_intent.payment_failed"], "thresholds": {"window_seconds": 3600},
    }
    # Its anomaly series and the type it reads (not one of ours) exist at 0 before any event.
    assert card_testing_count(first) == 0
    assert events_counted(first) == 0

    now = int(time.time())
    assert post(first, failed_payment("pi_cardtest", "fpA", now - 120))["duplicate"] is False
    second_card = failed_payment("pi_cardtest", "fpB", now - 60)
    assert post(last, second_card)["duplicate"] is False
    assert post(first, second_card)["duplicate"] is True  # a redelivery, to the other replica when two
    assert post(last, failed_payment("pi_cardtest", "fpB", now - 30))["duplicate"] is False  # same card again
    # A near miss: another intent failing with one card only.
    assert post(first, failed_payment("pi_other", "fpC", now - 30))["duplicate"] is False

    for exporter in replicas if len(replicas) > 1 else [first]:
        assert card_testing_count(exporter) == 1
        assert events_counted(exporter) == 4
    (record,) = [r for r in anomalies(last.url) if r["detector"] == "card_testing"]
    assert record["event_id"] == second_card["id"]
    assert (record["severity"], record["priority"]) == ("warning", "P2")  # its level, high, as shown
    assert record["related"] == ["fpA"]


def test_plugin_threshold_comes_from_its_setting(example_target: Path) -> None:
    env = {"PYTHONPATH": os.pathsep.join((str(example_target), str(ROOT))),
           "BILLINGWATCH_DETECTOR_CARD_TESTING_WINDOW_SECONDS": "30"}
    with processes.running_exporter(SECRET, **env) as exporter:
        listed = httpx.get(exporter.url + "/api/detectors", timeout=10).json()["detectors"]
        assert listed[-1]["thresholds"] == {"window_seconds": 30}
        now = int(time.time())
        post(exporter, failed_payment("pi_slow", "fpA", now - 120))
        post(exporter, failed_payment("pi_slow", "fpB", now - 60))  # 60 s apart: outside a 30 s window
        assert card_testing_count(exporter) == 0


def test_plugins_none_leaves_only_the_built_in_detectors(example_target: Path) -> None:
    env = {"PYTHONPATH": os.pathsep.join((str(example_target), str(ROOT))),
           "BILLINGWATCH_DETECTOR_PLUGINS": "none"}
    with processes.running_exporter(SECRET, **env) as exporter:
        listed = httpx.get(exporter.url + "/api/detectors", timeout=10).json()["detectors"]
        assert [d["name"] for d in listed] == BUILT_IN
        now = int(time.time())
        post(exporter, failed_payment("pi_x", "fpA", now - 60))
        # The built-in PaymentIntent failure count reads the type (issue 28); the plugin's
        # detector is gone, so nothing of card_testing exists.
        samples = scrape(exporter.url)
        assert value(samples, "billingwatch_events_total", type="payment_intent.payment_failed", livemode="false") == 1
        assert value(samples, "billingwatch_events_total", type="other", livemode="false") == 0
        assert not [k for k in samples if ("detector", "card_testing") in k[1]]


# ------------------------------------------------------------------ start-up errors


GOOD = '''
from dataclasses import dataclass
from typing import ClassVar
from billingwatch.detectors.base import Context
from billingwatch.recording.events import Event
from billingwatch.recording.plan import Check


@dataclass(frozen=True)
class Plugin:
    name: ClassVar[str] = "{name}"
    severity: ClassVar[str] = "{severity}"
    description: ClassVar[str] = "a test plugin"
    event_types: ClassVar[object] = {event_types}

    {fields}

    def checks(self, event: Event, context: Context) -> list[Check]:
        return []
'''


class Site:
    """A directory on sys.path holding installed distributions, as pip would leave them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def install(self, ep_name: str, source: str | None = None, value: str | None = None, **plugin: str) -> None:
        """A distribution whose module holds `source` (GOOD filled with `plugin` by default) and
        whose `billingwatch.detectors` entry point `ep_name` names `value` (module:Plugin by default)."""
        module = "bwplugin_" + uuid.uuid4().hex[:10]
        fill = {"name": ep_name, "severity": "low", "event_types": 'frozenset({"charge.failed"})', "fields": ""}
        fill.update(plugin)
        (self.root / f"{module}.py").write_text(source if source is not None else GOOD.format(**fill))
        dist = self.root / f"{module}-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(
            f"[billingwatch.detectors]\n{ep_name} = {(value or '{module}:Plugin').format(module=module)}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield Site(tmp_path)
    for name in set(sys.modules) - before:  # the plugin modules this test imported
        if name.startswith("bwplugin_"):
            del sys.modules[name]


def message_dist(site: Site) -> str:
    """The one distribution (= module) name installed in `site`."""
    (dist,) = site.root.glob("*.dist-info")
    return dist.name.removesuffix("-0.1.dist-info")


def startup_error(environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        build_detectors(environ or {})
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_a_well_formed_plugin_loads_after_the_built_ins(site: Site) -> None:
    site.install("fine", fields="limit: int = 5")
    detectors = build_detectors({"BILLINGWATCH_DETECTOR_FINE_LIMIT": "7"})
    assert [d.name for d in detectors] == [*BUILT_IN, "fine"]
    assert detectors[-1].limit == 7  # type: ignore[attr-defined]


def test_plugin_that_fails_to_import(site: Site) -> None:
    site.install("broken", source="import billingwatch_no_such_module\n")
    message = startup_error()
    assert message.startswith("plugin broken = bwplugin_")
    assert "cannot load: ModuleNotFoundError: No module named 'billingwatch_no_such_module'" in message


def test_plugin_naming_a_missing_class(site: Site) -> None:
    site.install("missing", value="{module}:Nope")
    assert startup_error().endswith(":Nope from " + message_dist(site) + ": cannot load: AttributeError: "
                                    "module '" + message_dist(site) + "' has no attribute 'Nope'")


def test_plugin_raising_while_imported(site: Site) -> None:
    site.install("raising", source="raise RuntimeError('no config\\nsecond line')\n")
    assert startup_error().endswith("cannot load: RuntimeError: no config")


def test_plugin_taking_a_built_in_name(site: Site) -> None:
    site.install("duplicate_charge")
    message = startup_error()
    assert message.startswith("detector duplicate_charge: the name is taken (built-in; plugin duplicate_charge")


def test_two_packages_registering_one_name(site: Site) -> None:
    site.install("twice")
    site.install("twice")
    assert startup_error().startswith("detector twice: registered twice (plugin twice = bwplugin_")


def test_entry_point_name_differs_from_the_detector_name(site: Site) -> None:
    site.install("alias", name="real_name")
    assert "the entry-point name must be the detector's name ('real_name')" in startup_error()


def test_plugin_with_a_bad_severity(site: Site) -> None:
    site.install("loud", severity="urgent")
    assert "detector loud (plugin loud = bwplugin_" in (message := startup_error())
    assert message.endswith("severity must be one of critical, high, medium, low, got 'urgent'")


@pytest.mark.parametrize(
    ("event_types", "error"),
    [
        ('frozenset({"charge.failed", "Charge Failed!"})', "not Stripe event types such as 'charge.succeeded': "
                                                           "'Charge Failed!'"),
        ('frozenset({"charge|failed.x"})', "'charge|failed.x'"),  # "|" would break the store field encoding
        ('frozenset({"charge"})', "'charge'"),
        ('["charge.failed"]', "event_types must be a frozenset of 1 to 32 Stripe event types"),
        ("frozenset()", "event_types must be a frozenset of 1 to 32"),
        ('frozenset(f"a.t{i}" for i in range(33))', "event_types must be a frozenset of 1 to 32"),
    ],
)
def test_plugin_with_event_types_it_cannot_read(site: Site, event_types: str, error: str) -> None:
    site.install("reader", event_types=event_types)
    assert error in startup_error()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ("ratio: float = 0.5", "threshold ratio must be an int field with a default"),
        ("limit: int = 0", "threshold limit default must be 1..1000000"),
    ],
)
def test_plugin_with_a_bad_threshold_field(site: Site, fields: str, error: str) -> None:
    site.install("knobs", fields=fields)
    assert startup_error().endswith(error)


def test_plugin_threshold_setting_is_validated_like_a_built_in(site: Site) -> None:
    site.install("tuned", fields="limit_seconds: int = 60")
    assert startup_error({"BILLINGWATCH_DETECTOR_TUNED_LIMIT_SECONDS": "soon"}) == (
        "BILLINGWATCH_DETECTOR_TUNED_LIMIT_SECONDS must be an integer, got 'soon'")


def test_plugin_setting_colliding_with_another_detectors_setting(site: Site) -> None:
    site.install("duplicate", fields="charge_window_seconds: int = 60")
    # BILLINGWATCH_DETECTOR_DUPLICATE_CHARGE_WINDOW_SECONDS is duplicate_charge's already.
    assert "setting BILLINGWATCH_DETECTOR_DUPLICATE_CHARGE_WINDOW_SECONDS is also duplicate_charge's" in startup_error()


@pytest.mark.anyio
async def test_a_type_only_a_plugin_reads_is_its_own_label_live_and_in_history(site: Site, store: Store) -> None:
    site.install("watcher", event_types='frozenset({"customer.created"})')
    recorder = Recorder(store, build_detectors({}), DEDUP_TTL, SUBSCRIPTION_TTL)
    now = int(time.time())
    await recorder.record(se.event("customer.created", se.shape("customer"), created=now - 60))
    await recorder.record(se.event("customer.created", se.shape("customer"), created=now - 30), history=True)
    await recorder.record(se.event("customer.deleted", se.shape("customer"), created=now - 10))
    samples = await figures(store)  # exposed with build_detectors({}): the plugin is on sys.path
    assert value(samples, "billingwatch_events_total", type="customer.created", livemode="false") == 1
    assert value(samples, "billingwatch_history_events_total", type="customer.created", livemode="false") == 1
    assert value(samples, "billingwatch_events_total", type="other", livemode="false") == 1
    assert value(samples, "billingwatch_history_events_total", type="other", livemode="false") == 0


def test_plugins_setting_selects_names_and_none_skips_a_broken_plugin(site: Site) -> None:
    site.install("wanted")
    site.install("broken", source="import billingwatch_no_such_module\n")
    assert [d.name for d in build_detectors({"BILLINGWATCH_DETECTOR_PLUGINS": "none"})] == BUILT_IN
    assert [d.name for d in build_detectors({"BILLINGWATCH_DETECTOR_PLUGINS": "wanted"})] == [*BUILT_IN, "wanted"]
    assert "cannot load" in startup_error({"BILLINGWATCH_DETECTOR_PLUGINS": "all"})


def test_plugins_setting_naming_an_uninstalled_or_malformed_plugin(site: Site) -> None:
    site.install("present")
    assert startup_error({"BILLINGWATCH_DETECTOR_PLUGINS": "present, absent"}) == (
        "BILLINGWATCH_DETECTOR_PLUGINS: not installed: absent (installed: present)")
    assert startup_error({"BILLINGWATCH_DETECTOR_PLUGINS": "Not-A-Name"}).startswith(
        "BILLINGWATCH_DETECTOR_PLUGINS: 'Not-A-Name' is not a detector name")


def test_serve_with_a_broken_plugin_exits_with_one_line(tmp_path: Path) -> None:
    Site(tmp_path).install("loud", severity="urgent")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    env.update(STRIPE_WEBHOOK_SECRET=SECRET, PYTHONPATH=os.pathsep.join((str(tmp_path), str(ROOT))))
    done = subprocess.run([sys.executable, "-m", "billingwatch", "serve", "--port", str(processes.free_port())],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("billingwatch: detector loud (plugin loud = bwplugin_")
    assert line.endswith("severity must be one of critical, high, medium, low, got 'urgent'")
