"""Real processes on free loopback ports, for the tests and the benchmarks: redis-server (alone, as a
replica, or watched by redis-sentinel) and the exporter."""

import functools
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
from typing import Self

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


class Started:
    """`with X() as x:` starts x and closes it on leaving the block (even when starting failed half-way)."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisServer(Started):
    """A real redis-server on a free loopback port; stop() and start() keep its data dir.

    Without a directory it uses a temporary one, which close() removes.
    """

    def __init__(self, directory: Path | None = None, appendonly: bool = False, replica_of: int | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self._temporary = directory is None
        self.extra = extra  # more redis-server arguments, e.g. an ACL
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
                "--appendfsync", "always", "--repl-diskless-sync-delay", "0", *self.extra]  # a replica syncs at once
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


class RedisClusterServers(Started):
    """A real Redis Cluster of `masters` redis-server processes (no replicas) on free loopback
    ports, created with `redis-cli --cluster create`; close() stops them and removes their dirs."""

    def __init__(self, masters: int = 3) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="billingwatch-cluster-"))
        self.ports = [free_port() for _ in range(masters)]
        # The bus port defaults to port + 10000, which may be taken or past 65535: pick free ones.
        self.bus_ports = [free_port() for _ in range(masters)]
        self.processes: list[subprocess.Popen[bytes]] = []

    def url(self, port: int) -> str:
        """The REDIS_URL that names the cluster through the node on `port`."""
        return f"redis+cluster://127.0.0.1:{port}"

    def cli(self, port: int, *args: str) -> str:
        # -e: an error reply is a non-zero exit, so check=True raises on it.
        done = subprocess.run([binary("redis-cli"), "-e", "-p", str(port), *args],
                              capture_output=True, text=True, timeout=30, check=True)
        return done.stdout.strip()

    def start(self) -> None:
        for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
            node_dir = self.directory / str(port)
            node_dir.mkdir()
            self.processes.append(subprocess.Popen(
                [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-port", str(bus_port), "--cluster-config-file", "nodes.conf",
                 "--save", "", "--appendonly", "no", "--dir", str(node_dir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            wait_until(functools.partial(port_open, port), what=f"redis-server on {port}")
        created = subprocess.run([binary("redis-cli"), "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                                  "--cluster-replicas", "0", "--cluster-yes"],
                                 capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-500:]}{created.stderr[-500:]}")
        # Every node must know the whole slot map before a client asks it.
        for port in self.ports:
            wait_until(functools.partial(self._cluster_ok, port), what=f"cluster state ok on {port}")

    def _cluster_ok(self, port: int) -> bool:
        return "cluster_state:ok" in self.cli(port, "cluster", "info")

    def node_id(self, port: int) -> str:
        return self.cli(port, "cluster", "myid")

    def owner(self, slot: int) -> int:
        """The port of the master serving `slot`, as the first node sees it."""
        for line in self.cli(self.ports[0], "cluster", "nodes").splitlines():
            fields = line.split()
            address, ranges = fields[1], fields[8:]
            for r in ranges:
                if r.startswith("["):
                    continue
                lo, _, hi = r.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return int(address.split(":")[1].split("@")[0])
        raise LookupError(f"no node serves slot {slot}")

    def migrate_slot(self, slot: int, source: int, target: int, batch: int = 100) -> int:
        """Move `slot` from the master on `source` to the one on `target` as a resharding does
        (SETSLOT IMPORTING/MIGRATING, MIGRATE the keys in batches, SETSLOT NODE on every master),
        while clients keep writing; returns how many keys moved."""
        source_id, target_id = self.node_id(source), self.node_id(target)
        self.cli(target, "cluster", "setslot", str(slot), "importing", source_id)
        self.cli(source, "cluster", "setslot", str(slot), "migrating", target_id)
        moved = 0
        while True:
            keys = self.cli(source, "cluster", "getkeysinslot", str(slot), str(batch)).split()
            if not keys:
                break
            self.cli(source, "migrate", "127.0.0.1", str(target), "", "0", "5000", "keys", *keys)
            moved += len(keys)
        for port in (target, source, *(p for p in self.ports if p not in (source, target))):
            self.cli(port, "cluster", "setslot", str(slot), "node", target_id)
        return moved

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(10)
        self.processes = []
        shutil.rmtree(self.directory, ignore_errors=True)


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
        # Generous: with the suite on every core, a start can wait its turn for a CPU; a healthy
        # start returns as soon as /health answers.
        wait_until(lambda: httpx.get(self.url + "/health", timeout=1).status_code == 200, timeout=60,
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
