"""The operator API under /admin/: the dead-letter list and replays, behind a bearer token.

With no ``ADMIN_TOKEN`` configured the whole prefix answers 404, as if it did not exist.
"""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.context import ApiContext, Limits
from api.errors import error_response
from shared.dlq import RunFilter, count_dead, list_dead, replay_dead, replay_event
from shared.events import EventNotFound
from shared.handlers import UnknownHandler
from shared.queue import enqueue_run
from shared.reconcile import StripeEventSource
from shared.webhooks import EventRefused

MAX_LIST = 1000


class AdminInputError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _since(value: Any) -> dt.datetime | None:
    if value in (None, ""):
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise AdminInputError("since", "must be an ISO 8601 date or date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _text(source: dict[str, Any], name: str) -> str | None:
    value = source.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise AdminInputError(name, "must be a string")
    return value


def _filters(source: dict[str, Any]) -> RunFilter:
    return RunFilter(
        event_type=_text(source, "type"),
        handler=_text(source, "handler"),
        since=_since(source.get("since")),
        error_contains=_text(source, "error"),
    )


def make_admin_blueprint(api: ApiContext, limits: Limits) -> Blueprint:
    admin = Blueprint("admin", __name__, url_prefix="/admin")
    settings, sessions, cipher = api.settings, api.runtime.sessions, api.runtime.cipher
    fetch_event = StripeEventSource(api.runtime.stripe_client).retrieve
    # Counted before the token is checked: guessing the token costs the same budget.
    limits.admin(admin)

    def enqueue(event_id: str, handler: str) -> None:
        enqueue_run(api.producer, event_id, handler)

    @admin.before_request
    def require_token() -> tuple[Response, int] | None:
        if not settings.admin_token:
            return error_response(
                404, "not_found", "The requested URL was not found on the server."
            )
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), settings.admin_token.encode()
        ):
            response, status = error_response(
                401, "unauthorized", "A valid bearer token is required."
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="admin"'
            return response, status
        return None

    @admin.errorhandler(AdminInputError)
    def bad_input(exc: AdminInputError) -> tuple[Response, int]:
        return error_response(400, "invalid_request", exc.message, field=exc.field)

    @admin.get("/dlq")
    def dlq_list() -> Response:
        try:
            limit = int(request.args.get("limit", 200))
        except ValueError:
            raise AdminInputError("limit", "must be an integer") from None
        if not 1 <= limit <= MAX_LIST:
            raise AdminInputError("limit", f"must be between 1 and {MAX_LIST}")
        rows = list_dead(sessions, _filters(dict(request.args)), limit=limit)
        return jsonify({"runs": [r.as_json() for r in rows], "totalDead": count_dead(sessions)})

    @admin.post("/dlq/replay")
    def dlq_replay() -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise AdminInputError("body", "must be a JSON object")
        ids = body.get("ids") or []
        replay_all = body.get("all") is True
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise AdminInputError("ids", "must be a list of run ids")
        if bool(ids) == replay_all:
            raise AdminInputError("ids", "give run ids, or all: true with optional filters")
        dry_run = body.get("dryRun") is True
        try:
            chosen = replay_dead(
                sessions,
                run_ids=ids,
                filters=_filters(body),
                dry_run=dry_run,
                enqueue=None if dry_run else enqueue,
            )
        except ValueError as exc:
            raise AdminInputError("ids", str(exc)) from None
        return jsonify(
            {
                "dryRun": dry_run,
                "replayed": 0 if dry_run else len(chosen),
                "runs": [r.as_json() for r in chosen],
            }
        )

    @admin.post("/events/<event_id>/replay")
    def event_replay(event_id: str) -> tuple[Response, int]:
        body = request.get_json(silent=True) or {}
        if not isinstance(body, dict):
            raise AdminInputError("body", "must be a JSON object")
        handler = _text(body, "handler")
        try:
            names = replay_event(
                sessions,
                event_id,
                cipher=cipher,
                handler=handler,
                fetch_event=fetch_event,
                enqueue=enqueue,
                scope=api.runtime.scope,
            )
        except UnknownHandler:
            raise AdminInputError("handler", f"no handler named {handler}") from None
        except EventNotFound:
            return error_response(404, "not_found", "No such event here or at Stripe.")
        except EventRefused as exc:
            # Of the other mode, or of an account we do not serve: never recorded or applied.
            return error_response(422, exc.code, exc.message)
        return jsonify({"eventId": event_id, "enqueued": names}), 200

    return admin
