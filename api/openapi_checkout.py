"""The OpenAPI parts about checkout sessions: the order a back end prices, and the session's
own paths. Kept apart from ``api.openapi`` so each module stays one a reader can hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.openapi_payments import CAPTURE_METHOD
from shared.validation import (
    CALLER_METADATA_KEY,
    MAX_AMOUNT,
    MAX_CHECKOUT_SESSION_SECONDS,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MIN_CHECKOUT_SESSION_SECONDS,
    SUPPORTED_CURRENCIES,
)

ORDER_PROPERTIES: dict[str, Any] = {
    "amount": {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT},
    "currency": {"type": "string", "enum": sorted(SUPPORTED_CURRENCIES)},
    "metadata": {
        "type": "object",
        # null is read as no metadata.
        "nullable": True,
        "maxProperties": MAX_METADATA_KEYS,
        "propertyNames": {
            "minLength": 1,
            "maxLength": MAX_METADATA_KEY_LENGTH,
            "pattern": "^[^\\[\\]\\x00]+$",
            # Set by the service itself: who made the payment.
            "not": {"enum": [CALLER_METADATA_KEY]},
        },
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_METADATA_VALUE_LENGTH,
            "pattern": "^[^\\x00]*$",
        },
    },
    "captureMethod": CAPTURE_METHOD,
}

_CHECKOUT_ORDER: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["amount", "currency"],
    "properties": {
        **ORDER_PROPERTIES,
        "expiresInSeconds": {
            "type": "integer",
            "minimum": MIN_CHECKOUT_SESSION_SECONDS,
            "maximum": MAX_CHECKOUT_SESSION_SECONDS,
        },
    },
}

_ISSUED_SESSION: dict[str, Any] = {
    "type": "object",
    "required": ["id", "token", "url", "expiresAt", "amount", "currency"],
    "properties": {
        "id": {"type": "string"},
        # Sent as X-Checkout-Session by the browser that pays it; also in url's fragment.
        "token": {"type": "string"},
        "url": {"type": "string"},
        "expiresAt": {"type": "string", "format": "date-time"},
        "amount": {"type": "integer"},
        "currency": {"type": "string"},
    },
}


def checkout_session_paths(errors: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The session's paths; ``errors(*codes)`` is the document's error responses."""
    return {
        "/api/checkout-sessions": {
            "post": {
                "summary": "A checkout session: an order the back end prices, a browser pays",
                "description": "Made by an API client (anonymously only on the dev stand-in's "
                "demo). The browser pays it with its token (X-Checkout-Session) or at its url.",
                "security": [{"apiClient": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _CHECKOUT_ORDER}},
                },
                "responses": {
                    "201": {
                        "description": "the new session",
                        "content": {"application/json": {"schema": _ISSUED_SESSION}},
                    },
                    **errors(400, 401, 413, 415, 429),
                },
            }
        },
        "/api/checkout-sessions/{session_id}/expire": {
            "post": {
                "summary": "End a checkout session now; its unpaid PaymentIntent is canceled",
                "security": [{"apiClient": []}],
                "parameters": [
                    {
                        "name": "session_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the session has ended (also when it already had)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["id", "status"],
                                    "properties": {
                                        "id": {"type": "string"},
                                        "status": {"const": "expired"},
                                    },
                                }
                            }
                        },
                    },
                    **errors(401, 404, 429, 502),
                },
            }
        },
    }
