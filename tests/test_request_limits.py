"""Issue 11, against real processes on loopback with raw sockets: header caps, body deadlines,
connection limits, malformed signature bytes, and several workers on the in-process store.

The read timeout is set to 1 s here (BILLINGWATCH_READ_TIMEOUT_SECONDS) so the tests stay short.
"""

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from billingwatch.fixtures import stripe_events as se
from testkit.processes import free_port, wait_until
from tests.conftest import ROOT, SECRET, running_exporter
from tests.metrics import scrape, value

LIMITS = {"BILLINGWATCH_READ_TIMEOUT_SECONDS": "1", "BILLINGWATCH_MAX_HEADER_BYTES": "16384"}


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(10)
    return sock


def read_until_closed(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


def webhook_request(headers: bytes, content_length: int) -> bytes:
    return (b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + headers + b"Content-Length: %d\r\n\r\n" % content_length)


@contextmanager
def factory_process(*args: str, **env_overrides: str) -> Iterator[subprocess.Popen[bytes]]:
    """`uvicorn billingwatch.server:app --factory` as someone would run it without `billingwatch serve`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    env.update({"STRIPE_WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(ROOT)}, **env_overrides)
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "billingwatch.server:app", "--factory", *args],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(15)


def test_16_mib_signature_header_is_cut_off_without_the_memory() -> None:
    with running_exporter(**LIMITS) as exporter:
        assert exporter.process is not None
        before = peak_rss_kib(exporter.process.pid)
        sock = connect(exporter.port)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed mid-header: what we want
            sock.sendall(webhook_request(b"Stripe-Signature: t=1," + b"v1=a," * 3_300_000 + b"\r\n", 2) + b"{}")
        answer, _ = read_until_closed(sock, 10)
        sock.close()
        # h11's receive buffer is capped (http/limits.py): past the cap uvicorn answers 400 and closes.
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400 Bad Request")
        # Before the fix the process grew by ~830 MiB while httptools buffered the header.
        assert peak_rss_kib(exporter.process.pid) - before < 32 * 1024
        assert httpx.get(exporter.url + "/health").status_code == 200


def test_headers_over_the_cap_get_431_before_the_app_runs() -> None:
    with running_exporter(**LIMITS) as exporter:
        for header in (b"X-Padding: " + b"a" * 20_000 + b"\r\n", b"X-A: b\r\n" * 3000):
            sock = connect(exporter.port)
            sock.sendall(webhook_request(header, 2) + b"{}")
            answer, _ = read_until_closed(sock, 10)
            sock.close()
            assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
            assert answer.endswith(b'{"error": "request headers too large"}')
        metrics = scrape(exporter.url)
        assert value(metrics, "billingwatch_webhook_requests_total", result="accepted") == 0


def test_headers_still_unfinished_past_the_parser_cap_get_400_and_the_connection_closed() -> None:
    """`billingwatch serve` caps h11's buffer at twice the header cap (uvicorn's public option)."""
    with running_exporter(**LIMITS) as exporter:
        sock = connect(exporter.port)
        sock.sendall(b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 40_000)
        answer, lasted = read_until_closed(sock, 10)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 400 Bad Request"), answer[:100]
        assert lasted < 5  # cut at the cap, not at a deadline


def test_a_body_of_ordinary_size_in_the_same_read_as_the_headers_is_not_counted_as_header() -> None:
    with running_exporter(**LIMITS) as exporter:
        evt = se.event("charge.succeeded", se.charge())
        evt["data"]["object"]["metadata"] = {"note": "x" * 60_000}  # body well over the header cap
        payload = se.body(evt)
        response = httpx.post(exporter.url + "/webhooks/stripe", content=payload,
                              headers=se.signed_headers(payload, SECRET))
        assert response.status_code == 200, response.text


def test_non_ascii_byte_in_stripe_signature_is_a_counted_400_not_a_500() -> None:
    with running_exporter(**LIMITS) as exporter:
        payload = se.body(se.event("charge.succeeded", se.charge()))
        sock = connect(exporter.port)
        sock.sendall(webhook_request(b"Stripe-Signature: t=1,v1=\xe9\r\nConnection: close\r\n", len(payload))
                     + payload)
        answer, _ = read_until_closed(sock, 10)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        metrics = scrape(exporter.url)
        assert value(metrics, "billingwatch_webhook_requests_total", result="invalid_signature") == 1
        process = exporter.process
        assert process is not None and process.stderr is not None
        exporter.stop()
        assert "Traceback" not in process.stderr.read().decode()


def test_half_sent_body_is_answered_408_and_closed_within_the_read_timeout() -> None:
    with running_exporter(**LIMITS) as exporter:
        socks = [connect(exporter.port) for _ in range(20)]
        for sock in socks:
            sock.sendall(webhook_request(b"", 1000) + b'{"id": ')
        for sock in socks:
            answer, _ = read_until_closed(sock, 10)
            sock.close()
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
            assert b"connection: close" in answer.lower()
        metrics = scrape(exporter.url)
        assert value(metrics, "billingwatch_webhook_requests_total", result="body_timeout") == 20


def test_trickled_body_is_dropped_at_the_deadline() -> None:
    with running_exporter(**LIMITS) as exporter:
        sock = connect(exporter.port)
        sock.sendall(webhook_request(b"", 100))
        start = time.monotonic()
        closed = False
        for _ in range(100):  # one byte every 0.1 s: 10 s to finish, the deadline is 1 s
            try:
                sock.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
            sock.setblocking(False)
            try:
                if sock.recv(65536, socket.MSG_PEEK).startswith(b"HTTP/1.1 408"):
                    closed = True
                    break
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
        sock.close()
        assert closed and time.monotonic() - start < 8


# The deadline for slow headers is the front proxy's (uvicorn has no public one): tests/test_proxy.py.


def test_connections_over_the_limit_get_503() -> None:
    with running_exporter(BILLINGWATCH_MAX_CONNECTIONS="3", BILLINGWATCH_READ_TIMEOUT_SECONDS="30") as exporter:
        held = [connect(exporter.port) for _ in range(3)]
        for sock in held:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        time.sleep(0.3)
        response = httpx.get(exporter.url + "/health")
        assert response.status_code == 503
        for sock in held:
            sock.close()
        wait_until(lambda: httpx.get(exporter.url + "/health").status_code == 200, what="slots freed")


def test_plain_uvicorn_factory_gets_the_app_level_limits() -> None:
    port = free_port()
    with factory_process("--port", str(port), **LIMITS):
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(url + "/health", timeout=1).status_code == 200, what="uvicorn factory")
        big = httpx.get(url + "/health", headers={"X-Padding": "a" * 20_000})
        assert big.status_code == 431 and big.json() == {"error": "request headers too large"}
        sock = connect(port)
        sock.sendall(webhook_request(b"", 1000) + b'{"id": ')
        answer, _ = read_until_closed(sock, 10)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408")


def test_two_workers_on_the_in_process_store_refuse_to_start() -> None:
    with factory_process("--port", str(free_port()), "--workers", "2") as process:
        process.wait(60)  # uvicorn's supervisor stops (exit code 0 from the parent, 3 from the worker)
        assert process.stderr is not None
        stderr = process.stderr.read().decode()
    lines = [line for line in stderr.splitlines() if line.startswith("billingwatch:")]
    assert lines and lines[0] == ("billingwatch: 2 worker processes need REDIS_URL: "
                                  "the in-process store is not shared between processes")
    assert "Traceback" not in stderr


def test_one_worker_on_the_in_process_store_starts() -> None:
    port = free_port()
    with factory_process("--port", str(port), "--workers", "1"):
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200,
                   what="one worker")


def test_two_workers_with_redis_start(redis_url: str) -> None:
    port = free_port()
    with factory_process("--port", str(port), "--workers", "2", REDIS_URL=redis_url,
                         BILLINGWATCH_REDIS_PREFIX="t" + str(port)):
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200,
                   timeout=30, what="two workers on redis")
