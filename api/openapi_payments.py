"""The OpenAPI parts about a payment after it is paid: the payment's view (with its amounts,
refunds and dispute) and the operators' refund, capture and cancel under /admin/payments/.

Literal schemas, kept apart from ``api.openapi`` so each module stays one a reader can hold.
"""

from __future__ import annotations

from typing import Any

from shared.validation import (
    CANCELLATION_REASONS,
    CAPTURE_METHODS,
    MAX_AMOUNT,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    REFUND_REASONS,
)

_NULLABLE_STRING = {"type": "string", "nullable": True}
_MINOR_UNITS = {"type": "integer", "minimum": 0}

REFUND = {
    "type": "object",
    "required": ["id", "amount", "status", "reason", "failureReason", "created"],
    "properties": {
        "id": {"type": "string"},
        "amount": {"type": "integer", "minimum": 1},
        "status": {"type": "string"},
        "reason": _NULLABLE_STRING,
        "failureReason": _NULLABLE_STRING,
        "created": {"type": "string", "format": "date-time"},
    },
}

DISPUTE = {
    "type": "object",
    "nullable": True,
    "required": ["id", "status", "reason", "amount", "evidenceDueBy"],
    "properties": {
        "id": {"type": "string"},
        "status": {"type": "string"},
        "reason": _NULLABLE_STRING,
        "amount": {"type": "integer", "minimum": 0},
        "evidenceDueBy": {"type": "string", "format": "date-time", "nullable": True},
        # charge.dispute.funds_withdrawn / funds_reinstated seen.
        "fundsWithdrawn": {"type": "boolean"},
        "fundsReinstated": {"type": "boolean"},
    },
}

# GET /api/payments/<id>: the payment, its amounts after payment, its refunds and its dispute.
PAYMENT = {
    "type": "object",
    "required": [
        "paymentIntentId",
        "amount",
        "currency",
        "status",
        "metadata",
        "lastError",
        "updatedAt",
        "amountReceived",
        "amountRefunded",
        "amountCapturable",
        "captureMethod",
        "refunds",
        "dispute",
        "checkoutSession",
    ],
    "properties": {
        "paymentIntentId": {"type": "string"},
        "amount": {"type": "integer", "minimum": 1},
        "currency": {"type": "string"},
        "status": {"type": "string"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        # The checkout session whose browser created it; null for a back end's payment.
        "checkoutSession": _NULLABLE_STRING,
        "lastError": {
            "type": "object",
            "nullable": True,
            "properties": {
                "code": _NULLABLE_STRING,
                "declineCode": _NULLABLE_STRING,
                "message": _NULLABLE_STRING,
            },
        },
        "updatedAt": {"type": "string", "format": "date-time"},
        "amountReceived": _MINOR_UNITS,
        "amountRefunded": _MINOR_UNITS,
        "amountCapturable": _MINOR_UNITS,
        "captureMethod": _NULLABLE_STRING,
        "refunds": {"type": "array", "items": REFUND},
        "dispute": DISPUTE,
    },
}


def _choice(values: tuple[str, ...]) -> dict[str, Any]:
    # null is read as not given, as everywhere in these bodies.
    return {"type": "string", "enum": list(values), "nullable": True}


CAPTURE_METHOD = _choice(CAPTURE_METHODS)
_AMOUNT = {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT, "nullable": True}


def _operation(summary: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"adminToken": []}],
            "parameters": [
                {
                    "name": "payment_intent_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                },
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": True,
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
                        "pattern": "^[\\x20-\\x7e]*[\\x21-\\x7e][\\x20-\\x7e]*$",
                    },
                },
            ],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": properties,
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Stripe's answer, recorded: the payment as GET shows it",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Payment"}}
                    },
                },
                **{
                    str(code): {
                        "description": "error (Stripe's refusals carry Stripe's code)",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    }
                    for code in (400, 401, 402, 404, 409, 413, 429, 502, 503)
                },
            },
        }
    }


ADMIN_PAYMENT_PATHS = {
    "/admin/payments/{payment_intent_id}/refunds": _operation(
        "Refund in full (default) or in part, several times up to the amount received",
        {"amount": _AMOUNT, "reason": _choice(REFUND_REASONS)},
    ),
    "/admin/payments/{payment_intent_id}/capture": _operation(
        "Capture a manual-capture payment in full (default) or in part",
        {"amount": _AMOUNT},
    ),
    "/admin/payments/{payment_intent_id}/cancel": _operation(
        "Cancel a payment that is not final yet",
        {"reason": _choice(CANCELLATION_REASONS)},
    ),
}
