"""The observability stack as real processes on free loopback ports, for end-to-end tests.

Prometheus (Debian's `prometheus`), Alertmanager (`prometheus-alertmanager`, gossip off), an
SMTP server (aiosmtpd) and an HTTP receiver that records what it is sent. Each is a context
manager: started on entry, stopped on exit.
"""

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiosmtpd.controller import Controller

from testkit.processes import binary, free_port, wait_until


class Prometheus:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; raises on a PromQL error (so a typo fails the test)."""
        reply = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10).json()
        if reply.get("status") != "success":
            raise AssertionError(f"query failed: {expr}: {reply.get('error')}")
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = httpx.get(self.url + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return alerts

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until the query returns a non-empty result, and return it."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            nonlocal found
            found = self.query(expr)
            return bool(found)

        wait_until(check, timeout, what=f"Prometheus query {expr}")
        return found


@contextmanager
def prometheus(
    directory: Path,
    targets: Sequence[str],
    rule_files: Sequence[Path] = (),
    alertmanager: str | None = None,
    interval: str = "1s",
    job: str = "billingwatch",
    args: Sequence[str] = (),
    scrape: Mapping[str, Any] | None = None,
    scrape_configs: Sequence[Mapping[str, Any]] | None = None,
) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` ("127.0.0.1:port") as `job`, evaluating `rule_files`;
    `args` are extra flags (e.g. a longer retention for backfilled blocks in `directory`/data);
    `scrape` adds to the scrape config (e.g. basic_auth, scheme); `scrape_configs` replaces it
    whole (a snippet as users paste it)."""
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": list(scrape_configs) if scrape_configs is not None else
        [{"job_name": job, "static_configs": [{"targets": list(targets)}], **(scrape or {})}],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    server = Prometheus(directory, free_port())
    process = subprocess.Popen(
        [binary("prometheus"), f"--config.file={config_file}", f"--storage.tsdb.path={directory / 'data'}",
         f"--web.listen-address=127.0.0.1:{server.port}", "--log.level=warn", *args],
        stdout=subprocess.DEVNULL, stderr=(directory / "prometheus.log").open("wb"),
    )
    try:
        wait_until(lambda: httpx.get(server.url + "/-/ready", timeout=1).status_code == 200,
                   what="prometheus ready")
        yield server
    finally:
        process.terminate()
        process.wait(15)


class Alertmanager:
    def __init__(self, port: int) -> None:
        self.port = port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = httpx.get(self.url + "/api/v2/alerts", timeout=10).json()
        return alerts


@contextmanager
def alertmanager(directory: Path, config_file: Path, port: int | None = None) -> Iterator[Alertmanager]:
    """Alertmanager with `config_file`, gossip off (--cluster.listen-address= empty), on `port`
    (a test that starts it late picks the port first) or a free one."""
    directory.mkdir(parents=True, exist_ok=True)
    server = Alertmanager(port or free_port())
    process = subprocess.Popen(
        [binary("prometheus-alertmanager"), f"--config.file={config_file}",
         f"--storage.path={directory / 'data'}", f"--web.listen-address={server.address}",
         "--cluster.listen-address=", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=(directory / "alertmanager.log").open("wb"),
    )
    try:
        wait_until(lambda: httpx.get(server.url + "/-/ready", timeout=1).status_code == 200,
                   what="alertmanager ready")
        yield server
    finally:
        process.terminate()
        process.wait(15)


class SmtpSink:
    """Messages received by a real SMTP server (aiosmtpd), with their arrival times."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[tuple[float, Message]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append((time.time(), message_from_bytes(envelope.original_content)))
        return "250 Message accepted for delivery"

    def received(self) -> list[Message]:
        with self._lock:
            return [m for _, m in self.messages]

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 30.0) -> tuple[float, Message]:
        found: list[tuple[float, Message]] = []

        def check() -> bool:
            with self._lock:
                found[:] = [(t, m) for t, m in self.messages if predicate(m)]
            return bool(found)

        wait_until(check, timeout, what="an email")
        return found[0]


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


class HttpSink:
    """Requests POSTed to a real HTTP server, by path, with their arrival times and JSON bodies."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[tuple[float, str, Any]] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def received(self, path: str) -> list[Any]:
        with self._lock:
            return [body for _, p, body in self.requests if p == path]

    def wait_for(self, path: str, predicate: Callable[[Any], bool], timeout: float = 30.0) -> tuple[float, Any]:
        found: list[tuple[float, Any]] = []

        def check() -> bool:
            with self._lock:
                found[:] = [(t, b) for t, p, b in self.requests if p == path and predicate(b)]
            return bool(found)

        wait_until(check, timeout, what=f"a POST to {path}")
        return found[0]


@contextmanager
def http_sink(port: int = 0) -> Iterator[HttpSink]:
    sink = HttpSink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            with sink._lock:
                sink.requests.append((time.time(), self.path, body))
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    sink.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
