"""Fixtures that start real processes on free loopback ports and stop them afterwards."""

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from billingwatch.config import Settings
from billingwatch.http.app import create_app
from billingwatch.store import MemoryStore, RedisStore, Store
from testkit import processes
from testkit.browser import Recorder, recording_proxy
from testkit.processes import Exporter, RedisServer

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_test_secret_for_tests_only"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of its own for each test, so tests share one redis-server without flushing."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """Each store contract test runs against both stores."""
    if request.param == "memory":
        yield MemoryStore()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis_store = RedisStore(server.url, prefix="t" + uuid.uuid4().hex[:12])
    yield redis_store


@pytest.fixture
def client(store: Store, make_client: Callable[..., TestClient]) -> TestClient:
    """The real app on each store in turn (the `store` fixture's parameters)."""
    return make_client(store=store)


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"webhook_secrets": (SECRET,)}
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """An in-process client for the real app: make_client(store=..., clock=..., **settings)."""
    clients: list[TestClient] = []

    def make(store: Store | None = None, clock: Callable[[], float] = time.time,
             peer: str = "127.0.0.1", **overrides: Any) -> TestClient:
        # By default an operator's direct request on this machine (loopback peer, Host localhost),
        # as the exporter sees one; test_access passes other peers.
        client = TestClient(create_app(settings(**overrides), store or MemoryStore(), clock=clock),
                            base_url="http://localhost", client=(peer, 50000))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@contextmanager
def running_exporter(**env_overrides: str) -> Iterator[Exporter]:
    """`billingwatch serve` with the test secret; env_overrides add settings (REDIS_URL=..., ...)."""
    with processes.running_exporter(SECRET, PYTHONPATH=str(ROOT), **env_overrides) as exporter:
        yield exporter


@pytest.fixture
def exporter_factory() -> Callable[..., Any]:
    return running_exporter


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# scripts/test.sh --quick (`-m quick`): the in-process tests of every package, for the edit-test
# loop. Every test of these modules is quick except the ones named (they start Prometheus,
# promtool, exporter processes or a browser, or build a wheel); docs/development.md.
QUICK: dict[str, tuple[str, ...]] = {
    "test_access": (),
    "test_accounts": ("test_two_accounts_in_one_exporter_on_redis",
                      "test_a_store_written_by_886d805_keeps_its_counts_as_the_default_account",
                      "test_two_accounts_on_a_redis_cluster"),
    "test_import_api": (),
    "test_json_text": (),
    "test_jsonload": (),
    "test_lean_plan": (),
    "test_alertmanager": (),
    "test_alertmanager_receivers": (),
    "test_alertmanager_subroute": (),
    "test_batch_apply": (),
    "test_anomaly_pages": (),
    "test_connect_accounts": ("test_a_pushed_alert_and_the_event_log_name_the_account_never_a_metric_label",),
    "test_collector": (),
    "test_csv_export": (),
    "test_data_hardening": (),
    "test_detector_errors": (),
    "test_detector_output": (),
    "test_detector_review": ("test_through_a_real_exporter_on_redis",),
    "test_detectors": (),
    "test_docs": (),
    "test_event_log": (),
    "test_events": (),
    "test_events_http": (),
    "test_fuzz": (),
    "test_hardening": (),
    "test_history": (),
    "test_home": (),
    "test_import_graph": (),
    "test_layout": ("test_the_wheel_ships_the_exporter_only",),
    "test_lock": (),
    "test_metrics_golden": (),
    "test_metrics_reading": (),
    "test_money_signals": (),
    "test_notify": (),
    "test_openapi": ("test_schemathesis_finds_nothing_against_a_live_exporter",),
    "test_plugins": (),
    "test_redis_packing": ("test_the_store_client_round_trips_through_a_real_redis",),
    "test_revenue_movements": (),
    "test_rules": ("test_promtool_checks_every_rule_file", "test_promtool_unit_tests",
                   "test_a_changed_threshold_yields_rules_that_fire_at_the_new_value"),
    "test_rules_target": (),
    "test_serve": ("test_serve_accepts_a_signed_event_and_shows_it_in_metrics",
                   "test_serve_on_redis_shares_state_between_two_replicas",
                   "test_serve_workers_auto_runs_one_worker_per_usable_core",
                   "test_serve_workers_auto_needs_redis_even_on_one_core",
                   "test_serve_workers_must_be_a_count_or_auto"),
    "test_simulate": (),
    "test_store_contract": (),
    "test_version": (),
    "test_uvicorn_public": (),
    "test_webhook_http": (),
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        if module in QUICK and getattr(item, "originalname", item.name) not in QUICK[module]:
            item.add_marker(pytest.mark.quick)
        # A module whose fixtures start servers once for the whole module runs on one xdist
        # worker (--dist loadgroup), so they start once; other tests spread one by one.
        if isinstance(item, pytest.Function) and _has_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(module))


def _has_module_fixture(item: pytest.Function) -> bool:
    info = item._fixtureinfo
    return any(defs[-1].scope == "module" for defs in info.name2fixturedefs.values() if defs)


@pytest.fixture
def now() -> int:
    """The test's clock, read when the test starts. Never a module-level NOW: on a loaded machine a
    module imported minutes before its test runs holds a stale one, and events built with the
    real clock then are "in the future" of it."""
    return int(time.time())


@pytest.fixture
def outside() -> Iterator[Recorder]:
    """The browser tests' proxy for every host but loopback (testkit/browser.py)."""
    with recording_proxy() as server:
        yield server
