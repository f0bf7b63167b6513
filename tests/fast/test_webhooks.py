"""What arrives at ``POST /webhook``, checked without a web server: the signature against each
configured secret, the shape of an event, its scope, and the copy fit to queue and store."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import stripe

from shared.config import load_settings
from shared.ledger.event_rules import (
    ACCOUNT_NOT_SERVED,
    LIVEMODE_MISMATCH,
    EventRefused,
    EventScope,
    WebhookRejected,
    check_event,
    storable_event,
)
from shared.ledger.receive.signatures import parse_event_body, verify_delivery, verify_signature
from tests.fast.ledger_kit import SCOPE, make_event

CURRENT, OLD, OTHER = ("whsec_" + c * 32 for c in "cox")
TOLERANCE = 300


def signature(body: str, secret: str, *, age: int = 0) -> str:
    header: str = stripe.WebhookSignature.generate_signature_header(
        body, secret, timestamp=int(time.time()) - age
    )
    return header


def code_of(call: Any) -> str:
    with pytest.raises(WebhookRejected) as caught:
        call()
    return caught.value.code


def test_the_signature_says_which_configured_secret_matched():
    body = json.dumps(make_event("fast.signed"))
    secrets = (CURRENT, OLD)

    assert verify_signature(body, signature(body, CURRENT), secrets, TOLERANCE) == 0
    # While a secret is rolled, deliveries signed with the old one still verify.
    assert verify_signature(body, signature(body, OLD), secrets, TOLERANCE) == 1


def test_a_missing_foreign_altered_or_stale_signature_is_rejected():
    body = json.dumps(make_event("fast.signed"))
    secrets = (CURRENT, OLD)
    signed = signature(body, CURRENT)

    assert code_of(lambda: verify_signature(body, None, secrets, TOLERANCE)) == (
        "signature_missing"
    )
    v0_only = signed.replace("v1=", "v0=")
    assert code_of(lambda: verify_signature(body, v0_only, secrets, TOLERANCE)) == (
        "signature_invalid"
    )
    foreign = signature(body, OTHER)
    assert code_of(lambda: verify_signature(body, foreign, secrets, TOLERANCE)) == (
        "signature_invalid"
    )
    assert code_of(lambda: verify_signature(body + " ", signed, secrets, TOLERANCE)) == (
        "signature_invalid"
    )
    stale = signature(body, OLD, age=TOLERANCE + 60)
    assert code_of(lambda: verify_signature(body, stale, secrets, TOLERANCE)) == (
        "signature_expired"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"object": "payment_intent"},
        {"id": None},
        {"id": "pi_123"},
        {"type": ""},
        {"created": True},
        {"created": "1700000000"},
        {"data": {"object": "pi_123"}},
        {"data": None},
    ],
)
def test_a_body_that_is_not_a_recordable_event_is_rejected(change: dict[str, Any]):
    event = {**make_event("fast.shape"), **change}
    assert code_of(lambda: check_event(event)) == "invalid_event"


def test_a_body_that_is_not_json_or_not_an_object_is_rejected():
    assert code_of(lambda: parse_event_body("{not json")) == "invalid_event"
    assert code_of(lambda: parse_event_body("[1, 2]")) == "invalid_event"
    event = make_event("fast.shape")
    assert parse_event_body(json.dumps(event)) == event


def test_a_delivery_is_verified_parsed_and_scoped_in_that_order():
    event = make_event("fast.delivery")
    body = json.dumps(event)

    delivered = verify_delivery(body.encode(), signature(body, OLD), (CURRENT, OLD), 300, SCOPE)

    assert (delivered.event_id, delivered.event_type, delivered.secret_index) == (
        event["id"],
        "fast.delivery",
        1,
    )
    assert delivered.event == event
    not_utf8 = b"\xff" + body.encode()
    assert code_of(lambda: verify_delivery(not_utf8, "t=1,v1=x", (CURRENT,), 300, SCOPE)) == (
        "invalid_event"
    )


def test_events_of_the_other_mode_or_an_account_we_do_not_serve_are_refused():
    live = {**make_event("fast.scope"), "livemode": True}
    foreign = {**make_event("fast.scope"), "account": "acct_someone_else"}
    served = {**make_event("fast.scope"), "account": "acct_served"}

    with pytest.raises(EventRefused) as mode:
        SCOPE.check(live)
    with pytest.raises(EventRefused) as account:
        SCOPE.check(foreign)

    # The other mode is a misconfiguration Stripe's dashboard should show; an account we do not
    # serve never will be, so Stripe is told to stop.
    assert (mode.value.code, mode.value.acknowledge) == (LIVEMODE_MISMATCH, False)
    assert (account.value.code, account.value.acknowledge) == (ACCOUNT_NOT_SERVED, True)
    assert (account.value.event_id, account.value.event_type) == (foreign["id"], "fast.scope")
    assert SCOPE.check(served) is served
    assert EventScope(livemode=True).check(live) is live


def test_the_scope_follows_the_secret_keys_mode_and_the_served_accounts():
    env = {
        "STRIPE_SECRET_KEY": "sk_live_" + "x" * 24,
        "STRIPE_PUBLISHABLE_KEY": "pk_live_" + "x" * 24,
        "STRIPE_WEBHOOK_SECRET": CURRENT,
        "STRIPE_CONNECTED_ACCOUNTS": "acct_one, acct_two",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1/x",
        "PAYMENTS_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWtleS1vbmUtbm90LXNlY3JldC0zMmI=",
    }
    assert EventScope.of(load_settings(env)) == EventScope(True, ("acct_one", "acct_two"))


def test_the_stored_copy_has_no_client_secret_and_no_nul():
    intent = {"id": "pi_1", "client_secret": "pi_1_secret_x", "metadata": {"note\x00": "a\x00b"}}
    event = {
        **make_event("payment_intent.succeeded"),
        "data": {
            "object": intent,
            "previous_attributes": {"client_secret": "pi_1_secret_old", "status": "processing"},
        },
        "tags": ["x\x00", 3],
    }

    stored = storable_event(event)

    assert "client_secret" not in stored["data"]["object"]
    assert stored["data"]["previous_attributes"] == {"status": "processing"}
    assert stored["data"]["object"]["metadata"] == {"note\ufffd": "a\ufffdb"}
    assert stored["tags"] == ["x\ufffd", 3]
    # The event as received is left as it was.
    assert event["data"]["object"]["client_secret"] == "pi_1_secret_x"


def test_an_event_without_secrets_or_nul_is_stored_as_it_came():
    event = make_event("fast.plain", note="nothing to hide")
    assert storable_event(event) == event
    assert storable_event({**event, "data": None})["data"] == {}


@pytest.mark.parametrize(
    ("event_type", "carried", "refused"),
    [
        ("payment_intent.succeeded", "payment_intent", False),
        ("payment_intent.succeeded", "charge", True),
        ("payment_intent.succeeded", None, True),
        ("charge.refunded", "charge", False),
        ("charge.refund.updated", "refund", False),
        ("charge.dispute.created", "charge", True),
        ("charge.dispute.funds_withdrawn", "dispute", False),
        ("refund.created", "payment_intent", True),
        # Families no handler of ours reads are the handler author's to check.
        ("invoice.paid", "charge", False),
    ],
)
def test_an_event_whose_object_is_not_its_types_is_refused(event_type, carried, refused):
    event = make_event(event_type)
    event["data"]["object"]["object"] = carried
    if refused:
        assert code_of(lambda: check_event(event)) == "invalid_event"
    else:
        assert check_event(event) is event
