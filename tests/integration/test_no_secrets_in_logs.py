"""Card numbers, client secrets, API keys and webhook secrets never reach logs or the database,
with every logger at DEBUG through a whole payment."""

from __future__ import annotations

import logging
import re

from sqlalchemy import text

from tests.conftest import OLD_WEBHOOK_SECRET, WEBHOOK_SECRET


def test_full_flow_at_debug_leaks_nothing(api, stand_in, settings, sessions, worker, caplog):
    caplog.set_level(logging.DEBUG)
    card = "4242424242424242"

    created = api.create_payment({"amount": 1999, "currency": "usd"}).json()
    stand_in.pay(created["paymentIntentId"], card)
    api.wait_for_status(created["paymentIntentId"], "succeeded")
    # A declined and a 3-D Secure payment exercise the error and next_action paths too.
    declined = api.create_payment({"amount": 2999, "currency": "usd"}).json()["paymentIntentId"]
    stand_in.pay(declined, "4000000000000341")
    secure = api.create_payment({"amount": 3999, "currency": "usd"}).json()["paymentIntentId"]
    stand_in.pay(secure, "4000002500003155")
    stand_in.authenticate(secure)
    api.wait_for_status(secure, "succeeded")

    worker_log = worker.log_path.read_text(errors="replace")
    with sessions() as session:
        database = " ".join(
            session.execute(text("SELECT row_to_json(t)::text FROM payments t")).scalars()
        ) + " ".join(
            session.execute(text("SELECT row_to_json(t)::text FROM stripe_events t")).scalars()
        )
    assert "payment_intent.succeeded" in worker_log  # the scan reads real output
    assert created["paymentIntentId"] in caplog.text

    forbidden = [
        re.escape(card),
        re.escape(created["clientSecret"]),
        r"pi_[A-Za-z0-9]+_secret_[A-Za-z0-9]+",
        re.escape(settings.stripe_secret_key),
        re.escape(WEBHOOK_SECRET),
        re.escape(OLD_WEBHOOK_SECRET),
    ]
    for where, content in (("api log", caplog.text), ("worker log", worker_log), ("db", database)):
        for pattern in forbidden:
            assert not re.search(pattern, content), f"{pattern} found in {where}"
