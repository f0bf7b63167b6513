"""/admin/effects: the outbox of handlers' side effects, and sending dead ones back to the
relay, behind operator tokens (read and replay scopes), every POST audited."""

from __future__ import annotations

from functools import partial, update_wrapper
from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.admin import AdminInputError, bad_input, guard_operators, list_limit
from api.context import ApiContext, Limits
from shared.db import transaction
from shared.effects.relay import effects_of, replay_dead_effects
from shared.models import OutboxEffect
from shared.models.effects import EFFECT_STATUSES

STATUSES = {status.value for status in EFFECT_STATUSES}


def effect_view(row: OutboxEffect) -> dict[str, Any]:
    """An effect as the admin API shows it: never its payload (an address, a URL that may be a
    credential), which stays encrypted."""
    return {
        "id": row.id,
        "eventId": row.event_id,
        "handler": row.handler,
        "name": row.name,
        "kind": row.kind,
        "status": row.status,
        "attempts": row.attempts,
        "replays": row.replays,
        "idempotencyKey": row.idempotency_key,
        "createdAt": row.created_at.isoformat(),
        "deliveredAt": row.delivered_at.isoformat() if row.delivered_at else None,
        "lastError": row.last_error,
    }


def admin_effects_blueprint(api: ApiContext, limits: Limits) -> Blueprint:
    blueprint = Blueprint("admin_effects", __name__, url_prefix="/admin/effects")
    limits.admin(blueprint)
    for rule, view, method in (("", _list, "GET"), ("/replay", _replay, "POST")):
        blueprint.add_url_rule(
            rule,
            endpoint=view.__name__.lstrip("_"),
            # The rate limiter tells views apart by their qualified names.
            view_func=update_wrapper(partial(view, api), view),
            methods=[method],
        )
    guard_operators(
        blueprint, api, {"admin_effects.list": "read", "admin_effects.replay": "replay"}
    )
    blueprint.register_error_handler(AdminInputError, bad_input)
    return blueprint


def _list(api: ApiContext) -> Response:
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise AdminInputError("status", f"must be one of {', '.join(sorted(STATUSES))}")
    limit = list_limit()
    with api.runtime.sessions() as session:
        rows = [effect_view(row) for row in effects_of(session, status, limit)]
    return jsonify({"effects": rows})


def _replay(api: ApiContext) -> Response:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise AdminInputError("body", "must be a JSON object")
    ids = body.get("ids") or []
    replay_all = body.get("allDead") is True
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise AdminInputError("ids", "must be a list of effect ids (integers)")
    if bool(ids) == replay_all:
        raise AdminInputError("ids", "give effect ids, or allDead: true, not both")
    with transaction(api.runtime.sessions) as session:
        replayed = replay_dead_effects(session, None if replay_all else ids)
    return jsonify({"replayed": replayed})
