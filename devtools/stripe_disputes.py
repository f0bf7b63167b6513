"""Disputes at the stand-in, which localstripe has none of; built from Stripe's own example
Dispute (devtools/stripe-fixtures).

As in Stripe's test mode (https://docs.stripe.com/testing#disputes), a dispute is opened by the
card, a moment after a payment with it succeeded (``stripe_card_followups.py``): a chargeback
(``needs_response``) sends ``charge.dispute.created`` then ``charge.dispute.funds_withdrawn``
(the amount and the dispute fee, in ``balance_transactions``); an inquiry
(``warning_needs_response``) only ``charge.dispute.created``. Then, as at Stripe:

- ``POST /v1/disputes/{id}`` with ``evidence[...]`` (and ``submit``, true by default) sends
  ``charge.dispute.updated`` (``under_review``, or ``warning_under_review`` for an inquiry, with
  ``previous_attributes``); evidence ``uncategorized_text=winning_evidence`` then closes it
  ``won`` (``charge.dispute.closed``, then ``charge.dispute.funds_reinstated``), and
  ``losing_evidence`` ``lost`` (``charge.dispute.closed``);
- ``POST /v1/disputes/{id}/close`` accepts it: ``lost`` at once (``charge.dispute.closed``);
- ``GET /v1/disputes/{id}`` and ``GET /v1/disputes`` (``charge``, ``payment_intent``) read them;
  the Charge says ``disputed`` and names its ``dispute``, and refuses refunds while charged back.

Differences left: an inquiry closes ``warning_closed`` whatever the evidence (at Stripe a
losing one may turn into a chargeback); due dates never pass; the dispute's balance
transactions are not themselves retrievable; updating a dispute that is no longer open is
refused in our words (code ``dispute_not_open``); no ``charge.dispute.funds_*`` for inquiries.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web
from localstripe.resources import Charge, List, StripeObject, try_convert_to_bool
from localstripe.server import get_post_data, json_response, unflatten_data

from devtools import stripe_events
from devtools.cards import CardDispute
from devtools.stripe_shape import emit, later, stripe_error

DISPUTE_FEE = 1500  # Stripe's dispute fee in the US, in cents
EVIDENCE_DAYS = 7
OUTCOME_DELAY = 1.0  # seconds from evidence to the card network's decision
OPEN = ("needs_response", "warning_needs_response")
EVIDENCE_OUTCOMES = {"winning_evidence": True, "losing_evidence": False}


class Dispute(StripeObject):
    object = "dispute"
    _id_prefix = "dp_"

    def __init__(self, charge: Any, plan: CardDispute) -> None:
        super().__init__()
        fixture = stripe_events.resource("dispute")
        self.amount = charge.amount_captured
        self.currency = charge.currency
        self.charge = charge.id
        self.payment_intent = charge.payment_intent
        self.reason = plan.reason
        self.status = plan.status
        self.balance_transactions: list[dict[str, Any]] = []
        self.evidence = fixture["evidence"]
        end_of_day = (self.created // 86400 + EVIDENCE_DAYS + 1) * 86400 - 1
        self.evidence_details = {**fixture["evidence_details"], "due_by": end_of_day}
        self.is_charge_refundable = plan.inquiry
        self.metadata: dict[str, str] = {}
        self.payment_method_details = fixture["payment_method_details"]
        self.payment_method_details["card"].update(
            case_type="inquiry" if plan.inquiry else "chargeback",
            network_reason_code=plan.network_reason_code,
        )
        fraud = plan.reason == "fraudulent"
        self.enhanced_eligibility_types = fixture["enhanced_eligibility_types"] if fraud else []


def _balance_transaction(dispute: Dispute, amount: int, fee: int, kind: str) -> dict[str, Any]:
    now = int(time.time())
    txn = stripe_events.resource("balance_transaction")
    fee_details = [{"amount": fee, "currency": dispute.currency, "description": "Dispute fee"}]
    txn.update(
        id="txn_" + secrets.token_hex(12),
        amount=amount,
        fee=fee,
        fee_details=[{**detail, "type": "stripe_fee"} for detail in fee_details] if fee else [],
        net=amount - fee,
        created=now,
        available_on=now,
        currency=dispute.currency,
        description=f"Chargeback {kind} for {dispute.charge}",
        reporting_category="dispute" if amount < 0 else "dispute_reversal",
        source=dispute.id,
        type="adjustment",
    )
    return txn


def open_dispute(charge: Any, plan: CardDispute) -> Dispute:
    """The cardholder's bank opens a dispute on ``charge``, as Stripe's dispute cards do."""
    dispute = Dispute(charge, plan)
    charge.disputed = True
    charge.dispute = dispute.id
    if not plan.inquiry:
        charge._charged_back = True
        withdrawal = _balance_transaction(dispute, -dispute.amount, DISPUTE_FEE, "withdrawal")
        dispute.balance_transactions.append(withdrawal)
    emit("charge.dispute.created", dispute)
    if not plan.inquiry:
        emit("charge.dispute.funds_withdrawn", dispute)
    return dispute


def close(dispute: Dispute, *, won: bool) -> None:
    """The card network decides (or the merchant accepts the dispute: ``won=False``)."""
    previous = {"status": dispute.status}
    inquiry = dispute.status.startswith("warning_")
    dispute.status = "warning_closed" if inquiry else ("won" if won else "lost")
    emit("charge.dispute.closed", dispute, previous)
    if dispute.status == "won" and dispute.balance_transactions:
        reversal = _balance_transaction(dispute, dispute.amount, 0, "reversal")
        dispute.balance_transactions.append(reversal)
        Charge._api_retrieve(dispute.charge)._charged_back = False
        emit("charge.dispute.funds_reinstated", dispute)


def _not_open(dispute: Dispute) -> Exception:
    return stripe_error(
        400, "dispute_not_open", f"This dispute is {dispute.status}: it can no longer be changed."
    )


def update(dispute: Dispute, data: dict[str, Any]) -> None:
    """POST /v1/disputes/{id}: evidence (submitted unless ``submit=false``) and metadata."""
    evidence = data.pop("evidence", None) or {}
    metadata = data.pop("metadata", None) or {}
    submit = try_convert_to_bool(data.pop("submit", True))
    unknown = [*data, *(f"evidence[{key}]" for key in evidence if key not in dispute.evidence)]
    if unknown:
        message = f"Received unknown parameter: {unknown[0]}"
        raise stripe_error(400, "parameter_unknown", message, unknown[0])
    if dispute.status not in OPEN:
        raise _not_open(dispute)
    previous: dict[str, Any] = {}
    details = dispute.evidence_details
    before = {name: details[name] for name in ("has_evidence", "submission_count")}
    if changed := {k: dispute.evidence[k] for k, v in evidence.items() if dispute.evidence[k] != v}:
        previous["evidence"] = changed
        dispute.evidence.update(evidence)
        details["has_evidence"] = True  # Stripe: "whether evidence has been staged"
    if metadata:
        previous["metadata"] = dict(dispute.metadata)
        dispute.metadata.update(metadata)
    if submit is True:
        previous["status"] = dispute.status
        dispute.status = dispute.status.replace("needs_response", "under_review")
        details["submission_count"] += 1
        outcome = EVIDENCE_OUTCOMES.get(dispute.evidence.get("uncategorized_text") or "")
        if outcome is not None:
            later(OUTCOME_DELAY, lambda: close(dispute, won=outcome))
    if changed_details := {name: old for name, old in before.items() if details[name] != old}:
        previous["evidence_details"] = changed_details
    if previous:
        emit("charge.dispute.updated", dispute, previous)


async def _retrieve(request: web.Request) -> web.Response:
    return json_response(Dispute._api_retrieve(request.match_info["id"])._export())


async def _list(request: web.Request) -> web.Response:
    query = unflatten_data(request.query)
    found = List("/v1/disputes", query.get("limit"), query.get("starting_after"))
    found._list = sorted(
        (
            dispute
            for dispute in Dispute._api_list_all("/v1/disputes")._list
            if query.get("charge") in (None, dispute.charge)
            and query.get("payment_intent") in (None, dispute.payment_intent)
        ),
        key=lambda dispute: dispute.created,
        reverse=True,
    )
    return json_response(found._export())


async def _update(request: web.Request) -> web.Response:
    dispute = Dispute._api_retrieve(request.match_info["id"])
    data = dict(await get_post_data(request) or {})
    expand = data.pop("expand", None)
    update(dispute, data)
    return json_response(dispute._export(expand=expand))


async def _close(request: web.Request) -> web.Response:
    dispute = Dispute._api_retrieve(request.match_info["id"])
    if dispute.status not in OPEN:
        raise _not_open(dispute)
    close(dispute, won=False)
    return json_response(dispute._export())


def install(app: web.Application) -> None:
    Charge.disputed = False
    Charge.dispute = None
    app.router.add_get("/v1/disputes/{id}", _retrieve)
    app.router.add_get("/v1/disputes", _list)
    app.router.add_post("/v1/disputes/{id}", _update)
    app.router.add_post("/v1/disputes/{id}/close", _close)
