"""`payments refund|capture|cancel`: an operation on a payment at Stripe, recorded in the ledger.

(`payments payments refund|capture|cancel`, the first spelling, still works, unlisted.)

Each command needs ``--idempotency-key``, as the admin API needs its Idempotency-Key: running a
command again with the same key (after a timeout, a lost terminal) gets Stripe's first answer
again and never refunds or captures twice. The key is scoped to the operation and the payment,
and the admin API scopes its keys the same way, so a command can safely retry an API call that
used the same key. A key is never generated for you: one printed after the fact is one an
operator retrying in a hurry would not have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import stripe

from cli.common import operator_runtime
from shared.observability.redaction import redact
from shared.operators import OK, AuditEntry, AuditTrail, cli_operator
from shared.payments.operations import OperationResult, PaymentNotFound, PaymentOperations
from shared.validation import (
    CANCELLATION_REASONS,
    REFUND_REASONS,
    CancelRequest,
    CaptureRequest,
    RefundRequest,
    ValidationError,
    validate_required_idempotency_key,
)

AMOUNT = click.IntRange(min=1)
KEY_HELP = (
    "Required. The same key again retries this operation safely (Stripe answers as the first "
    "time); a new key is a new operation."
)


def _key_option(func: Any) -> Any:
    return click.option("--idempotency-key", "key", required=True, help=KEY_HELP)(func)


def _run(action: str, payment_intent_id: str, request: Any, key: str) -> OperationResult:
    """Run the operation ``action`` (refund, capture, cancel), written to the audit trail as
    the CLI's operator (cli:<login>)."""
    rt, _ = operator_runtime()
    audit = AuditTrail(rt.sessions)
    entry = audit.begin(AuditEntry(cli_operator(), "refund", action, payment_intent_id, key))
    try:
        operate: Callable[[str, Any, str], OperationResult] = getattr(
            PaymentOperations(rt.sessions, rt.gateway), action
        )
        result = operate(payment_intent_id, request, key)
    except PaymentNotFound as exc:
        audit.finish(entry, "not_found")
        raise click.ClickException(f"no payment {exc} in the ledger") from None
    except stripe.StripeError as exc:
        audit.finish(entry, exc.code or "stripe_error", stripe_request_id=exc.request_id)
        # Stripe's message is written for the operator; masked all the same.
        detail = redact(exc.user_message or type(exc).__name__)
        raise click.ClickException(f"Stripe refused: {exc.code or 'error'}: {detail}") from None
    audit.finish(entry, OK, stripe_request_id=result.stripe_request_id)
    return result


def _checked_key(key: str) -> str:
    try:
        return validate_required_idempotency_key(key)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="--idempotency-key") from None


def _payment_line(result: OperationResult) -> str:
    payment = result.payment
    return f"payment {payment.payment_intent_id}: {payment.status} in the ledger"


@click.group("payments", hidden=True)
def payments() -> None:
    """Refund, capture or cancel a payment (the admin API's /admin/payments/ operations)."""


@payments.command("refund")
@click.argument("payment_intent_id")
@click.option("--amount", type=AMOUNT, help="In minor units; default: all that is left.")
@click.option("--reason", type=click.Choice(REFUND_REASONS))
@_key_option
def refund(payment_intent_id: str, amount: int | None, reason: str | None, key: str) -> None:
    """Refund PAYMENT_INTENT_ID in full or in part (several times, up to the amount received)."""
    request = RefundRequest(amount=amount, reason=reason)
    checked = _checked_key(key)
    result = _run("refund", payment_intent_id, request, checked)
    answer = result.stripe_object
    click.echo(
        f"refund {answer['id']}: {answer['status']}, {answer['amount']} {answer['currency']}"
    )
    click.echo(_payment_line(result))


@payments.command("capture")
@click.argument("payment_intent_id")
@click.option("--amount", type=AMOUNT, help="In minor units; default: all that is capturable.")
@_key_option
def capture(payment_intent_id: str, amount: int | None, key: str) -> None:
    """Capture a manual-capture PAYMENT_INTENT_ID in full or in part (the rest is released)."""
    request = CaptureRequest(amount=amount)
    checked = _checked_key(key)
    result = _run("capture", payment_intent_id, request, checked)
    answer = result.stripe_object
    received = answer.get("amount_received")
    click.echo(f"captured: Stripe says {answer['status']}, amount received {received}")
    click.echo(_payment_line(result))


@payments.command("cancel")
@click.argument("payment_intent_id")
@click.option("--reason", type=click.Choice(CANCELLATION_REASONS))
@_key_option
def cancel(payment_intent_id: str, reason: str | None, key: str) -> None:
    """Cancel PAYMENT_INTENT_ID if it is not final yet (a held authorisation is released)."""
    request = CancelRequest(reason=reason)
    checked = _checked_key(key)
    result = _run("cancel", payment_intent_id, request, checked)
    click.echo(f"canceled: Stripe says {result.stripe_object['status']}")
    click.echo(_payment_line(result))
