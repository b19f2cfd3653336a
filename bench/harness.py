"""Processes for the benchmarks: servers on free ports and /proc figures (redis-server, free ports and
waiting come from testkit.processes, shared with the tests)."""

import os
import subprocess
import sys
from pathlib import Path

from testkit.processes import port_open, wait_until

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_bench_secret_for_benchmarks_only"  # the benchmarks' own signing secret
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (uvicorn --workers N forks N worker processes)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, ValueError):
                continue
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes."""
    total = 0
    for pid in pids:
        with_fields = _stat(pid)
        total += int(with_fields[11]) + int(with_fields[12])  # utime, stime
    return total / TICKS


def rss_bytes(pids: list[int]) -> int:
    return sum(int(_stat(pid)[21]) * PAGE for pid in pids)


def start_server(args: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    process = subprocess.Popen([sys.executable, *args], env=full_env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: port_open(port), timeout=20.0, what=f"a server on {port}")
    return process


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(20)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    load = Path("/proc/loadavg").read_text().split()[:3]
    return (f"{os.cpu_count()} x {cpu}, {mem} MiB RAM, Linux {os.uname().release}, "
            f"Python {sys.version.split()[0]}, load average before the run {' '.join(load)}")
