"""Thin events (Stripe's Event Destinations): a ``v2.core.event`` that names the object it is
about (``related_object``) and carries no ``data``. Signed with the same scheme as snapshot
events, verified by the receiver as they are, and queued as they arrived: no Stripe call in the
request. The worker then fetches the related object as it is now and records the event in the
shape every handler knows (``data.object``), so one handler serves both kinds.

During a migration from snapshot to thin events Stripe sends both; a thin event's
``snapshot_event`` names its twin, and the ledger records the pair under that one id: whichever
arrives first is applied, the other is a duplicate (handlers run once).

Where this differs from a snapshot event: the object is the one fetched when the worker ran,
not the one of the moment the event happened (a later change may already show); a related
object that no longer exists is recorded as ``{"id", "object", "deleted": true}``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from cryptography.fernet import InvalidToken

from shared.infra.crypto import PayloadCipher
from shared.ledger.event_rules import WebhookRejected

THIN_EVENT_OBJECT = "v2.core.event"
# A v1 resource's event delivered thin may carry its API namespace; the registry knows the
# snapshot event's type.
V1_PREFIX = "v1."

# (related object's URL) -> the object as Stripe returns it now, or None when it is gone.
FetchRelated = Callable[[str], dict[str, Any] | None]


def is_thin(event: Any) -> bool:
    return isinstance(event, dict) and event.get("object") == THIN_EVENT_OBJECT


def check_thin_event(event: dict[str, Any]) -> dict[str, Any]:
    """A thin event we can queue: its id, type, creation time and related object. Its
    ``context`` (a connected account) is its ``account`` for the event rules."""
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not event_id.startswith("evt_"):
        raise WebhookRejected("invalid_event", "event id is missing or malformed")
    if not isinstance(event_type, str) or not event_type:
        raise WebhookRejected("invalid_event", "event type is missing")
    if not isinstance(event.get("created"), str):
        raise WebhookRejected("invalid_event", "a thin event's created is an ISO 8601 time")
    _created(event)
    related = event.get("related_object")
    if not isinstance(related, dict) or not all(
        isinstance(related.get(key), str) for key in ("id", "type", "url")
    ):
        raise WebhookRejected("invalid_event", "a thin event names its related_object")
    if not str(related["url"]).startswith("/v"):
        raise WebhookRejected("invalid_event", "a related object's url is a Stripe API path")
    context = event.get("context")
    if context is not None:
        event["account"] = context
    return event


def _created(event: dict[str, Any]) -> int:
    try:
        created = dt.datetime.fromisoformat(str(event["created"]).replace("Z", "+00:00"))
    except ValueError:
        raise WebhookRejected("invalid_event", "a thin event's created is not a time") from None
    return int(created.timestamp())


def ledger_event(thin: dict[str, Any], related: dict[str, Any] | None, version: str) -> dict:
    """The thin event as the ledger records it: under its snapshot twin's id when it has one,
    its type without the v1 namespace, and the related object as ``data.object``."""
    reference = thin["related_object"]
    obj = (
        related
        if related is not None
        else {
            "id": reference["id"],
            "object": reference["type"],
            "deleted": True,
        }
    )
    recorded = {
        "id": thin.get("snapshot_event") or thin["id"],
        "object": "event",
        "type": str(thin["type"]).removeprefix(V1_PREFIX),
        "created": _created(thin),
        "livemode": bool(thin.get("livemode", False)),
        "api_version": version,
        "data": {"object": obj},
        "thin_event": thin["id"],
    }
    if thin.get("account"):
        recorded["account"] = thin["account"]
    return recorded


def expand_queued(body: str, cipher: PayloadCipher, fetch: FetchRelated, version: str) -> str:
    """A queued body ready for the ledger: a thin event's, with its related object fetched
    (a failed fetch raises, and the ingest retries as for any transient error); any other body
    unchanged, to be checked (or refused, quarantined) by the ingest as usual."""
    try:
        event = cipher.decrypt(body)
    except InvalidToken:
        return body
    if not is_thin(event):
        return body
    thin = check_thin_event(event)
    related = fetch(thin["related_object"]["url"])
    return cipher.encrypt(ledger_event(thin, related, version))
