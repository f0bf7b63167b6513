"""Operators (issue 23, item 4): named tokens with scopes, every action in the audit trail with
who did it, and the log line naming them. Against the served app, PostgreSQL, the worker and
the Stripe stand-in."""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

import pytest
import requests
from sqlalchemy import select

from devtools.processes import REPO_ROOT, run_payments
from shared.models import AdminAction
from tests.conftest import READER_TOKEN, TREASURER_NEXT_TOKEN, TREASURER_TOKEN
from tests.integration.test_payment_operations import paid, stand_in_refunds


def as_operator(base: str, token: str, method: str, path: str, **kwargs: Any):
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    return requests.request(method, f"{base}{path}", headers=headers, timeout=30, **kwargs)


def audit_of(sessions, target: str) -> list[AdminAction]:
    with sessions() as session:
        return list(
            session.execute(
                select(AdminAction).where(AdminAction.target == target).order_by(AdminAction.id)
            ).scalars()
        )


def test_a_read_token_reads_and_moves_no_money(live_api, api, stand_in, settings, sessions):
    intent_id = paid(api, stand_in)
    key = secrets.token_hex(8)

    read = as_operator(live_api.url, READER_TOKEN, "GET", f"/admin/payments/{intent_id}")
    dead = as_operator(live_api.url, READER_TOKEN, "GET", "/admin/dlq")
    refund = as_operator(
        live_api.url,
        READER_TOKEN,
        "POST",
        f"/admin/payments/{intent_id}/refunds",
        headers={"Idempotency-Key": key},
    )

    assert read.status_code == dead.status_code == 200
    assert read.json()["paymentIntentId"] == intent_id
    assert refund.status_code == 403
    assert refund.json()["error"]["code"] == "insufficient_scope"
    assert stand_in_refunds(settings, intent_id) == []
    [entry] = audit_of(sessions, intent_id)
    assert (entry.operator, entry.scope, entry.action, entry.idempotency_key) == (
        "reader",
        "refund",
        "refunds",
        key,
    )
    assert (entry.outcome, entry.status) == ("insufficient_scope", 403)


def test_a_refund_is_audited_with_who_the_key_and_stripes_request(
    live_api, api, stand_in, settings, sessions, caplog
):
    intent_id = paid(api, stand_in)
    key = secrets.token_hex(8)
    caplog.set_level("INFO")

    # The token being rotated in is the same operator as the one it replaces.
    refund = as_operator(
        live_api.url,
        TREASURER_NEXT_TOKEN,
        "POST",
        f"/admin/payments/{intent_id}/refunds",
        json={"amount": 300},
        headers={"Idempotency-Key": key},
    )

    assert refund.status_code == 200
    [entry] = audit_of(sessions, intent_id)
    assert (entry.operator, entry.scope, entry.action, entry.target) == (
        "treasurer",
        "refund",
        "refunds",
        intent_id,
    )
    assert (entry.idempotency_key, entry.outcome, entry.status) == (key, "ok", 200)
    assert entry.stripe_request_id is not None and entry.stripe_request_id.startswith("req_")
    assert entry.finished_at is not None and entry.finished_at >= entry.started_at
    # The log line says who: every record of the request carries the operator.
    lines = [
        r for r in caplog.records if r.getMessage().startswith(f"admin refunds on {intent_id}")
    ]
    assert lines and all(getattr(r, "operator", None) == "treasurer" for r in lines)
    # No token is ever in the audit trail.
    stored = json.dumps([str(v) for v in vars(entry).values()])
    assert TREASURER_NEXT_TOKEN not in stored and TREASURER_TOKEN not in stored


def test_replays_need_the_replay_scope(live_api, sessions):
    refused = as_operator(
        live_api.url, TREASURER_TOKEN, "POST", "/admin/dlq/replay", json={"all": True}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"


def test_the_cli_lists_the_audit_and_audits_itself(api, live_api, stand_in, base_env):
    intent_id = paid(api, stand_in)
    env = {**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)}
    key = f"cli-{secrets.token_hex(6)}"

    refunded = run_payments(
        "refund", intent_id, "--amount", "100", "--idempotency-key", key, env=env
    )
    listed = run_payments("admin", "audit", "--limit", "20", env=env)

    assert refunded.returncode == 0, refunded.stderr
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if intent_id in line)
    assert "cli:" in row and "refund" in row and key in row and " ok " in f"{row} "


@pytest.mark.parametrize("path", ["/admin/dlq", "/admin/payments/pi_x"])
def test_a_wrong_token_is_401(live_api, path):
    response = as_operator(live_api.url, "not-a-token-of-ours-" + "x" * 10, "GET", path)
    assert response.status_code == 401
