"""create-payment figure for `make bench`: our POST /api/create-payment against a direct SDK call.

Sequential calls, alternating one of ours and one direct Stripe SDK `PaymentIntent.create`
to the same stand-in (so both meet the same moments of machine noise), each with its own
idempotency key. Ours goes over one keep-alive HTTP connection to our web process (that hop
is part of our figure); the direct call uses the client our service builds
(shared.infra.stripe_gateway.make_stripe_client: same SDK, HTTP client, timeouts and retries).
"""

from __future__ import annotations

import http.client
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from bench.perf.stack import API_CLIENT_KEY, PerfStack
from shared.config import load_settings
from shared.infra.stripe_gateway import make_stripe_client

WARMUP_CALLS = 10


@dataclass(frozen=True)
class CreatePayment:
    ours: list[float]  # seconds per call
    direct: list[float]
    failures: int


class _Ours:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def create(self, key: str) -> bool:
        body = json.dumps({"amount": 1000, "currency": "usd", "metadata": {"orderId": key}})
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {API_CLIENT_KEY}",
            "Idempotency-Key": key,
        }
        self.conn.request("POST", "/api/create-payment", body=body, headers=headers)
        response = self.conn.getresponse()
        response.read()
        return response.status == 200


class _Direct:
    def __init__(self, stack: PerfStack) -> None:
        self.client = make_stripe_client(load_settings(stack.env))

    def create(self, key: str) -> bool:
        params: Any = {"amount": 1000, "currency": "usd", "metadata": {"orderId": key}}
        self.client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
        return True


def _timed(call: Any, key: str) -> tuple[float, bool]:
    started = time.perf_counter()
    ok = bool(call(key))
    return time.perf_counter() - started, ok


def create_payment(stack: PerfStack, calls: int) -> CreatePayment:
    ours, direct = _Ours(stack.web_port), _Direct(stack)
    run = secrets.token_hex(4)
    timings: dict[str, list[float]] = {"ours": [], "direct": []}
    failures = 0
    for index in range(WARMUP_CALLS + calls):
        for name, call in (("ours", ours.create), ("direct", direct.create)):
            seconds, ok = _timed(call, f"bench-{run}-{name}-{index}")
            failures += not ok
            if index >= WARMUP_CALLS and ok:
                timings[name].append(seconds)
    ours.conn.close()
    return CreatePayment(timings["ours"], timings["direct"], failures)
