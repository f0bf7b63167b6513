"""Stored event payloads are encrypted; keys rotate without losing a row."""

from __future__ import annotations

import json
import os

from sqlalchemy import select, text

from devtools import stripe_events
from devtools.processes import REPO_ROOT, run_payments
from shared.db import make_session_factory
from shared.effects.outbox import Effects
from shared.effects.relay import rotate_effect_payloads
from shared.infra.crypto import PayloadCipher, rotate_stored_payloads
from shared.ledger.event_rows import record_event, stored_payload
from shared.models import OutboxEffect, StripeEvent
from tests.conftest import ENCRYPTION_KEY, NEXT_ENCRYPTION_KEY


def a_customer_event() -> dict:
    intent = stripe_events.payment_intent(status="succeeded")
    intent["shipping"] = {
        "name": "Jenny Rosen",
        "address": {"line1": "510 Townsend St", "city": "San Francisco", "country": "US"},
    }
    intent["receipt_email"] = "jenny.rosen@example.com"
    return stripe_events.event("payment_intent.succeeded", intent)


def raw_row(sessions, event_id: str) -> str:
    with sessions() as session:
        return session.execute(
            text("SELECT row_to_json(e)::text FROM stripe_events e WHERE id = :id"),
            {"id": event_id},
        ).scalar_one()


def test_raw_column_holds_no_plaintext(sessions, settings):
    event = a_customer_event()
    with sessions.begin() as session:
        record_event(session, event, "webhook", PayloadCipher(settings.encryption_keys))

    raw = raw_row(sessions, event["id"])

    for plaintext in (
        "Jenny Rosen",
        "jenny.rosen@example.com",
        "510 Townsend",
        event["data"]["object"]["id"],
    ):
        assert plaintext not in raw
    with sessions() as session:
        row = session.get(StripeEvent, event["id"])
        assert row is not None
        assert row.payload is None
        assert (
            stored_payload(row, PayloadCipher(settings.encryption_keys))["data"]["object"][
                "receipt_email"
            ]
            == "jenny.rosen@example.com"
        )


def test_rotation_reencrypts_old_rows_and_encrypts_plaintext_ones(sessions, settings, base_env):
    old_cipher = PayloadCipher((ENCRYPTION_KEY,))
    under_old_key = a_customer_event()
    legacy_plaintext = a_customer_event()
    with sessions.begin() as session:
        record_event(session, under_old_key, "webhook", old_cipher)
        # A row from before encryption at rest.
        record_event(session, legacy_plaintext, "webhook", old_cipher)
        session.execute(
            text(
                "UPDATE stripe_events SET payload = CAST(:p AS jsonb), payload_encrypted = NULL "
                "WHERE id = :id"
            ),
            {"p": json.dumps(legacy_plaintext), "id": legacy_plaintext["id"]},
        )
    assert "Jenny Rosen" in raw_row(sessions, legacy_plaintext["id"])
    # A side effect asked for under the old key: its URL may be a credential.
    with make_session_factory(sessions.kw["bind"], old_cipher).begin() as session:
        Effects(session, under_old_key["id"], "tests.rotation").http(
            "notice", "https://hooks.example/T0KEN", {"n": 1}
        )

    # The new key goes first; the old one stays to decrypt until rotation is done.
    env = {
        **os.environ,
        **base_env,
        "PYTHONPATH": str(REPO_ROOT),
        "PAYMENTS_ENCRYPTION_KEYS": f"{NEXT_ENCRYPTION_KEY},{ENCRYPTION_KEY}",
    }
    result = run_payments("keys", "rotate", env=env)
    assert result.returncode == 0, result.stderr

    new_only = PayloadCipher((NEXT_ENCRYPTION_KEY,))
    with sessions() as session:
        for event in (under_old_key, legacy_plaintext):
            row = session.get(StripeEvent, event["id"])
            assert row is not None
            assert row.payload is None
            # Readable with the new key alone: the old one can now be retired.
            assert stored_payload(row, new_only)["id"] == event["id"]
    assert "Jenny Rosen" not in raw_row(sessions, legacy_plaintext["id"])
    with sessions() as session:
        effect = session.scalars(
            select(OutboxEffect).where(OutboxEffect.event_id == under_old_key["id"])
        ).one()
        assert new_only.decrypt(effect.payload_encrypted)["url"] == "https://hooks.example/T0KEN"

    # Put the suite's key back in front for the rest of the tests.
    suite_first = PayloadCipher((ENCRYPTION_KEY, NEXT_ENCRYPTION_KEY))
    rotate_stored_payloads(sessions, suite_first)
    rotate_effect_payloads(sessions, suite_first)
