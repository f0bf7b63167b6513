"""A web process that dies (SIGKILL) right after Stripe created the PaymentIntent, before our
commit: ``python -m tests.support.die_after_stripe <idempotency key> <marker>``."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from api import create_app
from shared.config import load_settings
from shared.infra.stripe_gateway import StripeGateway


class DyingGateway:
    def __init__(self, real: StripeGateway) -> None:
        self._real = real

    def create_payment_intent(self, **kwargs: Any) -> Any:
        self._real.create_payment_intent(**kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    def retrieve_payment_intent(self, payment_intent_id: str) -> Any:
        return self._real.retrieve_payment_intent(payment_intent_id)


def main() -> None:
    key, marker = sys.argv[1], sys.argv[2]
    settings = load_settings()
    app = create_app(settings, gateway=DyingGateway(StripeGateway.from_settings(settings)))
    _, api_key = settings.api_clients[0]
    app.test_client().post(
        "/api/create-payment",
        json={"amount": 2300, "currency": "usd", "metadata": {"marker": marker}},
        headers={"Idempotency-Key": key, "Authorization": f"Bearer {api_key}"},
    )


if __name__ == "__main__":
    main()
