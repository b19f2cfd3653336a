"""Fixtures that start real processes on free loopback ports and stop them afterwards."""

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from billingwatch.config import Settings
from billingwatch.http.app import create_app
from billingwatch.store import MemoryStore, RedisStore, Store
from tests.stripe_events import SECRET

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; the test command (README) installs it")
    return path


def wait_until(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    """A real redis-server on a free loopback port; stop() and start() keep its data dir."""

    def __init__(self, directory: Path, appendonly: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.directory), "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), what=f"redis-server on {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


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


class Exporter:
    """`billingwatch serve` as a real process (uvicorn), as a user runs it."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> None:
        args = [sys.executable, "-m", "billingwatch", "serve", "--port", str(self.port), *extra]
        self.process = subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: httpx.get(self.url + "/health", timeout=1).status_code == 200,
                   what=f"billingwatch serve on {self.port}")

    def stop(self, sig: int | None = None) -> None:
        if self.process is None:
            return
        if sig is None:
            self.process.terminate()
        else:
            self.process.send_signal(sig)
        self.process.wait(15)
        self.process = None


@contextmanager
def running_exporter(**env_overrides: str) -> Iterator[Exporter]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    env.update({"STRIPE_WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(ROOT)})
    env.update(env_overrides)
    exporter = Exporter(env, free_port())
    exporter.start()
    try:
        yield exporter
    finally:
        exporter.stop()


@pytest.fixture
def exporter_factory() -> Callable[..., Any]:
    return running_exporter


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
