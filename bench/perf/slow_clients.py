"""`/webhook` latency under slow clients: `python -m bench.perf.slow_clients`.

Starts the Procfile's `web` line (gunicorn, gevent workers) on a spare port with its own Redis,
opens `--slow` connections that send their request a byte a second (slowloris), and meanwhile
posts signed webhooks at a steady `--rate` for `--seconds`. Prints acknowledgement latency
percentiles with and without the slow clients. Figures for the README; no test asserts them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.chaos.brokers import OwnRedis
from devtools import stripe_events
from devtools.processes import Process, free_port, port_open, procfile_command, wait_until

WEBHOOK_SECRET = "whsec_bench_" + "s" * 24


def web_env(redis_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "STRIPE_SECRET_KEY": "sk_test_bench_" + "k" * 20,
        "STRIPE_PUBLISHABLE_KEY": "pk_test_bench_" + "k" * 20,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": "http://127.0.0.1:9",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/unused_by_webhook",
        "PAYMENTS_ENCRYPTION_KEYS": "YmVuY2gtb25seS1rZXktbm90LWEtc2VjcmV0LTMyYiE=",
        "LOG_LEVEL": "WARNING",
    }


def slowloris(port: int, count: int, stop: threading.Event) -> None:
    conns = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        conns.append(conn)
    while not stop.wait(1):
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.sendall(b"a")
    for conn in conns:
        conn.close()


def steady_load(url: str, rate: float, seconds: float) -> list[float]:
    latencies: list[float] = []
    session_local = threading.local()

    def one() -> None:
        session = getattr(session_local, "s", None) or requests.Session()
        session_local.s = session
        event = stripe_events.event("payment_intent.created", stripe_events.payment_intent())
        body, headers = stripe_events.signed(event, WEBHOOK_SECRET)
        started = time.perf_counter()
        response = session.post(url, data=body, headers=headers, timeout=10)
        if response.status_code == 200:
            latencies.append(time.perf_counter() - started)

    with ThreadPoolExecutor(16) as pool:
        start = time.perf_counter()
        total = int(rate * seconds)
        for index in range(total):
            time.sleep(max(0.0, start + index / rate - time.perf_counter()))
            pool.submit(one)
    return latencies


def percentiles(latencies: list[float]) -> str:
    if len(latencies) < 2:
        return "no answers"
    cuts = statistics.quantiles(latencies, n=100)
    return f"n={len(latencies)} p50={cuts[49] * 1000:.1f} ms p99={cuts[98] * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    redis = OwnRedis()
    redis.start()
    port = free_port()
    web = Process("bench-web", procfile_command("web", port), web_env(redis.port))
    try:
        wait_until(lambda: port_open(port), 30, "gunicorn start")
        url = f"http://127.0.0.1:{port}/webhook"
        steady_load(url, args.rate, 3)  # warm-up: both workers loaded, pools open
        print("alone:        ", percentiles(steady_load(url, args.rate, args.seconds)))
        stop = threading.Event()
        attacker = threading.Thread(target=slowloris, args=(port, args.slow, stop))
        attacker.start()
        time.sleep(2)  # let every slow connection be accepted and stalled
        print(f"{args.slow} slow clients:", percentiles(steady_load(url, args.rate, args.seconds)))
        stop.set()
        attacker.join()
    finally:
        web.stop()
        assert redis.proc is not None
        redis.proc.stop()


if __name__ == "__main__":
    main()
