"""Peak memory of `billingwatch serve` and /health latency while one client sends a 16 MiB header.

    python -m bench.header_flood [--mib 16] [--rounds 1]

Prints the process' peak resident memory (VmHWM) before and after, how long the attacking
connection lasted, and the slowest /health answer meanwhile; with --rounds N, N attacks one after
another against the same process (median and worst), and /health's latency with no attack as
the yardstick for a busy machine. Loopback only, one connection at a time, stops by itself.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx

from bench.harness import SECRET
from testkit.processes import free_port, wait_until


def peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1])


def attack(port: int, value: bytes) -> str:
    """One connection sending the whole header; the first line of the answer, or how it ended."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        try:
            conn.sendall(b"POST /webhooks/stripe HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n"
                         b"Stripe-Signature: " + value + b"\r\n\r\n{}")
            conn.settimeout(30)
            return conn.recv(64).split(b"\r\n", 1)[0].decode() or "closed"
        except OSError as exc:
            return f"{type(exc).__name__} (connection cut)"


def health_latency(base: str) -> float:
    asked = time.monotonic()
    httpx.get(base + "/health", timeout=60)
    return time.monotonic() - asked


def one_round(base: str, port: int, value: bytes) -> tuple[str, float, float]:
    """(answer, how long the attacking connection lasted, the slowest /health meanwhile)."""
    answer: list[str] = []
    thread = threading.Thread(target=lambda: answer.append(attack(port, value)))
    started = time.monotonic()
    thread.start()
    slowest = 0.0
    while thread.is_alive():
        slowest = max(slowest, health_latency(base))
        time.sleep(0.05)
    thread.join()
    return answer[0] if answer else "?", time.monotonic() - started, slowest


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s" if len(values) == 1 else (
        f"median {statistics.median(values):.2f} s, worst {max(values):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=16, help="header size in MiB (default 16)")
    parser.add_argument("--rounds", type=int, default=1, help="attacks against the same process (default 1)")
    args = parser.parse_args()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    env["STRIPE_WEBHOOK_SECRET"] = SECRET
    server = subprocess.Popen([sys.executable, "-m", "billingwatch", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(base + "/health").status_code == 200, what="the exporter")
        quiet = [health_latency(base) for _ in range(20)]
        before = peak_kib(server.pid)
        # The shape of the reported attack: "t=1," then "v1=a," repeated.
        value = b"t=1," + b"v1=a," * (args.mib * 1024 * 1024 // 5)
        rounds = [one_round(base, port, value) for _ in range(args.rounds)]
        answers = sorted({answer for answer, _, _ in rounds})
        print(f"header {args.mib} MiB, {args.rounds} attack{'s' if args.rounds > 1 else ''}: "
              f"answer {', '.join(answers)}")
        print(f"peak memory (VmHWM) {before} kB -> {peak_kib(server.pid)} kB")
        print(f"attacking connection lasted {spread([lasted for _, lasted, _ in rounds])}; "
              f"slowest /health meanwhile {spread([slowest for _, _, slowest in rounds])}")
        print(f"/health with no attack (20 requests): {spread(quiet)}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
