"""Peak memory of `billingwatch serve` and /health latency while one client sends a 16 MiB header.

    python -m bench.header_flood [--mib 16]

Prints the process' peak resident memory (VmHWM) before and after, how long the attacking
connection lasted, and the slowest /health answer meanwhile. Loopback only, one connection,
stops by itself.
"""

import argparse
import os
import socket
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=16, help="header size in MiB (default 16)")
    args = parser.parse_args()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    env["STRIPE_WEBHOOK_SECRET"] = SECRET
    server = subprocess.Popen([sys.executable, "-m", "billingwatch", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(base + "/health").status_code == 200, what="the exporter")
        before = peak_kib(server.pid)
        # The shape of the reported attack: "t=1," then "v1=a," repeated.
        value = b"t=1," + b"v1=a," * (args.mib * 1024 * 1024 // 5)
        answer: list[str] = []

        def attack() -> None:
            with socket.create_connection(("127.0.0.1", port)) as conn:
                try:
                    conn.sendall(b"POST /webhooks/stripe HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n"
                                 b"Stripe-Signature: " + value + b"\r\n\r\n{}")
                    conn.settimeout(30)
                    answer.append(conn.recv(64).split(b"\r\n", 1)[0].decode() or "closed")
                except OSError as exc:
                    answer.append(f"{type(exc).__name__} (connection cut)")

        thread = threading.Thread(target=attack)
        started = time.monotonic()
        thread.start()
        slowest = 0.0
        while thread.is_alive():
            asked = time.monotonic()
            httpx.get(base + "/health", timeout=60)
            slowest = max(slowest, time.monotonic() - asked)
            time.sleep(0.05)
        lasted = time.monotonic() - started
        print(f"header {args.mib} MiB: answer {answer[0] if answer else '?'}")
        print(f"peak memory (VmHWM) {before} kB -> {peak_kib(server.pid)} kB")
        print(f"attacking connection lasted {lasted:.2f} s; slowest /health meanwhile {slowest:.2f} s")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
