"""The operator API under /admin/: the dead-letter list and replays, behind operator tokens.

Every route needs a scope (read, replay or refund) that the operator's token carries
(``ADMIN_TOKENS``); every POST is written to the audit trail (``shared.operators``) with the
operator's name, before it runs and once it has ended. With no operator configured the whole
prefix answers 404, as if it did not exist.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import partial, update_wrapper
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from api.context import ApiContext, Limits
from api.errors import error_response
from shared.ledger.event_rows import EventNotFound
from shared.ledger.event_rules import EventRefused
from shared.ledger.handlers import UnknownHandler
from shared.ledger.recovery.dead_letters import (
    ListedRun,
    RunFilter,
    count_dead,
    list_dead,
    replay_dead,
)
from shared.ledger.recovery.reconcile import StripeEventSource
from shared.ledger.recovery.replay import replay_event
from shared.ledger.runs.enqueue import enqueue_handler_run
from shared.observability.logs import bind
from shared.operators import OK, AuditEntry, AuditTrail, operator_for

MAX_LIST = 1000


def run_view(run: ListedRun) -> dict[str, Any]:
    """A handler run as the admin API shows it."""
    return {
        "id": run.run_id,
        "eventId": run.event_id,
        "handler": run.handler,
        "eventType": run.event_type,
        "status": run.status,
        "attempts": run.attempts,
        "replays": run.replays,
        "updatedAt": run.updated_at.isoformat(),
        "error": run.error_line,
        "lastError": run.last_error,
    }


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
    # Counted before the token is checked: guessing the token costs the same budget.
    limits.admin(admin)
    routes: dict[tuple[str, str], tuple[Callable[..., Any], str]] = {
        ("/dlq", "GET"): (_dlq_list, "read"),
        ("/dlq/replay", "POST"): (_dlq_replay, "replay"),
        ("/events/<event_id>/replay", "POST"): (_event_replay, "replay"),
    }
    scopes = {}
    for (rule, method), (view, scope) in routes.items():
        endpoint = view.__name__.lstrip("_")
        scopes[f"admin.{endpoint}"] = scope
        admin.add_url_rule(
            rule,
            endpoint=endpoint,
            view_func=update_wrapper(partial(view, api), view),
            methods=[method],
        )
    guard_operators(admin, api, scopes)
    admin.register_error_handler(AdminInputError, bad_input)
    return admin


def guard_operators(blueprint: Blueprint, api: ApiContext, scopes: dict[str, str]) -> None:
    """Gate every route of ``blueprint`` on an operator token with the route's scope, and
    audit every POST."""
    audit = AuditTrail(api.runtime.sessions)
    blueprint.before_request(partial(_admit_operator, api, scopes, audit))
    blueprint.after_request(partial(_audit_outcome, audit))


def _admit_operator(
    api: ApiContext, scopes: dict[str, str], audit: AuditTrail
) -> tuple[Response, int] | None:
    if not api.settings.operators:
        return error_response(404, "not_found", "The requested URL was not found on the server.")
    operator = operator_for(request.headers.get("Authorization"), api.settings.operators)
    if operator is None:
        response, status = error_response(401, "unauthorized", "A valid bearer token is required.")
        response.headers["WWW-Authenticate"] = 'Bearer realm="admin"'
        return response, status
    scope = scopes[str(request.endpoint)]
    bind(operator=operator.name)
    if request.method == "POST":
        # Before the scope check: an attempt refused for its scope is audited too.
        g.audit_id = audit.begin(
            AuditEntry(
                operator=operator.name,
                scope=scope,
                action=str(request.endpoint).split(".", 1)[1],
                target=_target(),
                idempotency_key=request.headers.get("Idempotency-Key"),
            )
        )
    if scope not in operator.scopes:
        return error_response(
            403, "insufficient_scope", f"This operator's token does not carry the {scope} scope."
        )
    return None


def _target() -> str:
    args = request.view_args or {}
    return str(args.get("payment_intent_id") or args.get("event_id") or request.path)


def _audit_outcome(audit: AuditTrail, response: Response) -> Response:
    entry_id = g.pop("audit_id", None)
    if entry_id is not None:
        body = response.get_json(silent=True) if response.is_json else None
        error = body.get("error") if isinstance(body, dict) else None
        outcome = str(error.get("code")) if isinstance(error, dict) else OK
        if response.status_code >= 400 and outcome == OK:
            outcome = f"http_{response.status_code}"
        audit.finish(
            entry_id,
            outcome,
            status=response.status_code,
            stripe_request_id=g.pop("stripe_request_id", None),
        )
    return response


def bad_input(exc: AdminInputError) -> tuple[Response, int]:
    return error_response(400, "invalid_request", exc.message, field=exc.field)


def _enqueuer(api: ApiContext) -> Callable[[str, str], None]:
    registry = api.runtime.registry
    return lambda event_id, handler: enqueue_handler_run(api.producer, registry, event_id, handler)


def list_limit() -> int:
    """The ``limit`` query parameter of a list: 200 unless given, at most MAX_LIST."""
    try:
        limit = int(request.args.get("limit", 200))
    except ValueError:
        raise AdminInputError("limit", "must be an integer") from None
    if not 1 <= limit <= MAX_LIST:
        raise AdminInputError("limit", f"must be between 1 and {MAX_LIST}")
    return limit


def _dlq_list(api: ApiContext) -> Response:
    limit = list_limit()
    sessions = api.runtime.sessions
    rows = list_dead(sessions, _filters(dict(request.args)), limit=limit)
    return jsonify({"runs": [run_view(r) for r in rows], "totalDead": count_dead(sessions)})


def _dlq_replay(api: ApiContext) -> Response:
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
            api.runtime.sessions,
            run_ids=ids,
            filters=_filters(body),
            dry_run=dry_run,
            enqueue=None if dry_run else _enqueuer(api),
        )
    except ValueError as exc:
        raise AdminInputError("ids", str(exc)) from None
    replayed = 0 if dry_run else len(chosen)
    return jsonify({"dryRun": dry_run, "replayed": replayed, "runs": [run_view(r) for r in chosen]})


def _event_replay(api: ApiContext, event_id: str) -> tuple[Response, int]:
    body = request.get_json(silent=True) or {}
    if not isinstance(body, dict):
        raise AdminInputError("body", "must be a JSON object")
    handler = _text(body, "handler")
    try:
        names = replay_event(
            api.runtime.sessions,
            event_id,
            cipher=api.runtime.cipher,
            handler=handler,
            fetch_event=StripeEventSource(api.runtime.stripe_client).retrieve,
            enqueue=_enqueuer(api),
            scope=api.runtime.scope,
            registry=api.runtime.registry,
        )
    except UnknownHandler:
        raise AdminInputError("handler", f"no handler named {handler}") from None
    except EventNotFound:
        return error_response(404, "not_found", "No such event here or at Stripe.")
    except EventRefused as exc:
        # Of the other mode, or of an account we do not serve: never recorded or applied.
        return error_response(422, exc.code, exc.message)
    return jsonify({"eventId": event_id, "enqueued": names}), 200
