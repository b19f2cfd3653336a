"""Real processes on free loopback ports, for the tests and the benchmarks: redis-server (alone, as a
replica, or watched by redis-sentinel) and the exporter."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not installed; the test command (README) installs it")
    return path


def wait_until(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll `check` until it is true; connection errors while a server starts count as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A real redis-server on a free loopback port; stop() and start() keep its data dir.

    Without a directory it uses a temporary one, which close() removes.
    """

    def __init__(self, directory: Path | None = None, appendonly: bool = False, replica_of: int | None = None) -> None:
        self._temporary = directory is None
        self.directory = directory if directory is not None else Path(tempfile.mkdtemp(prefix="billingwatch-redis-"))
        self.port = free_port()
        self.appendonly = appendonly
        self.replica_of = replica_of  # the port of its master on loopback
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.directory), "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always", "--repl-diskless-sync-delay", "0"]  # a replica syncs at once
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), what=f"redis-server on {self.port}")

    def stop(self, sig: int | None = None) -> None:
        if self.process is not None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            self.process.wait(10)
            self.process = None

    def close(self) -> None:
        self.stop()
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    def info(self, section: str) -> dict[str, str]:
        """INFO <section> as name → value, through redis-cli (no client state to clean up)."""
        out = subprocess.run([binary("redis-cli"), "-p", str(self.port), "info", section],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)

    def replicas_online(self) -> int:
        """Replicas that finished their first sync and stream writes (WAIT counts only these)."""
        return sum("state=online" in v for k, v in self.info("replication").items() if k.startswith("slave"))


class RedisSentinel:
    """A real redis-sentinel on a free loopback port watching `master` (a port) as `name`;
    fast timings so a failover takes seconds, not the default minutes."""

    def __init__(self, directory: Path, master: int, name: str = "mymaster", quorum: int = 2) -> None:
        self.port = free_port()
        self.directory = directory
        self.config = directory / f"sentinel-{self.port}.conf"  # Sentinel rewrites its config file
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {name} 127.0.0.1 {master} {quorum}\n"
            f"sentinel down-after-milliseconds {name} 1000\n"
            f"sentinel failover-timeout {name} 5000\n"
        )
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([binary("redis-sentinel"), str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), what=f"redis-sentinel on {self.port}")

    def master(self) -> dict[str, str]:
        """SENTINEL MASTER <name>: what this Sentinel knows of the master (ip, port, num-slaves...)."""
        out = subprocess.run([binary("redis-cli"), "-p", str(self.port), "sentinel", "master", self.name],
                             capture_output=True, text=True, timeout=10, check=True).stdout.splitlines()
        return dict(zip(out[::2], out[1::2], strict=False))

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


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
def running_exporter(secret: str, **env_overrides: str) -> Iterator[Exporter]:
    """An exporter with the webhook signing `secret` and nothing else from this environment's
    BillingWatch, Redis or Stripe settings (so a developer's shell cannot change a run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    env["STRIPE_WEBHOOK_SECRET"] = secret
    env.update(env_overrides)
    exporter = Exporter(env, free_port())
    exporter.start()
    try:
        yield exporter
    finally:
        exporter.stop()
