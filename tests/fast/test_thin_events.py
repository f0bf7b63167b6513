"""Thin events as the ledger records them (shared.ledger.thin_events): checked as they arrive,
then recorded under their snapshot twin's id when they have one, with the fetched object."""

from __future__ import annotations

import pytest

from shared.infra.crypto import PayloadCipher
from shared.ledger.event_rules import WebhookRejected
from shared.ledger.thin_events import check_thin_event, expand_queued, ledger_event

THIN = {
    "id": "evt_thin_1",
    "object": "v2.core.event",
    "type": "v1.payment_intent.succeeded",
    "created": "2026-12-08T03:00:00.250Z",
    "livemode": False,
    "related_object": {"id": "pi_1", "type": "payment_intent", "url": "/v1/payment_intents/pi_1"},
}


def test_a_thin_event_is_recorded_under_its_twin_with_the_fetched_object():
    thin = check_thin_event({**THIN, "snapshot_event": "evt_snap_1", "context": "acct_1"})
    recorded = ledger_event(thin, {"id": "pi_1", "object": "payment_intent"}, "2026-10-28.endive")
    assert recorded == {
        "id": "evt_snap_1",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": 1796698800,
        "livemode": False,
        "api_version": "2026-10-28.endive",
        "data": {"object": {"id": "pi_1", "object": "payment_intent"}},
        "thin_event": "evt_thin_1",
        "account": "acct_1",
    }


def test_a_related_object_that_is_gone_is_recorded_as_deleted():
    recorded = ledger_event(check_thin_event(dict(THIN)), None, "v")
    assert recorded["id"] == "evt_thin_1"
    assert recorded["data"]["object"] == {"id": "pi_1", "object": "payment_intent", "deleted": True}


@pytest.mark.parametrize(
    "broken",
    [
        {"related_object": None},
        {"related_object": {"id": "pi_1", "type": "payment_intent", "url": "https://evil/x"}},
        {"created": 1796698800},
        {"created": "yesterday"},
        {"id": "not-an-event"},
    ],
)
def test_a_thin_event_that_cannot_be_recorded_is_refused(broken):
    with pytest.raises(WebhookRejected):
        check_thin_event({**THIN, **broken})


def test_only_a_thin_body_is_expanded_and_only_then_is_stripe_asked(cipher: PayloadCipher):
    asked: list[str] = []

    def fetch(url: str) -> dict:
        asked.append(url)
        return {"id": "pi_1", "object": "payment_intent", "status": "succeeded"}

    snapshot = cipher.encrypt({"id": "evt_snapshot", "object": "event"})
    assert expand_queued(snapshot, cipher, fetch, "v") == snapshot
    assert expand_queued("not a token", cipher, fetch, "v") == "not a token"
    assert asked == []
    expanded = cipher.decrypt(expand_queued(cipher.encrypt(dict(THIN)), cipher, fetch, "v"))
    assert asked == ["/v1/payment_intents/pi_1"]
    assert expanded["data"]["object"]["status"] == "succeeded"
