"""The OpenAPI document for the public API, served at /openapi.json.

Written by hand to say exactly what we promise; the fuzzing test holds the app to it.
"""

from __future__ import annotations

from typing import Any

from api.openapi_checkout import ORDER_PROPERTIES, checkout_session_paths
from api.openapi_payments import ADMIN_PAYMENT_PATHS, PAYMENT
from shared.validation import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
)

_ERROR = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {
        "success": {"const": False},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        },
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in codes
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "Stripe payments service", "version": "1.0.0"},
        "components": {
            "securitySchemes": {
                # A merchant's back end, with a key from API_CLIENT_KEYS.
                "apiClient": {"type": "http", "scheme": "bearer"},
                # A browser paying a checkout session: the token POST /api/checkout-sessions gave.
                "checkoutSession": {"type": "apiKey", "in": "header", "name": "X-Checkout-Session"},
                # The operators, with ADMIN_TOKEN.
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "Error": _ERROR,
                "Payment": PAYMENT,
            },
        },
        "paths": {
            **checkout_session_paths(_errors),
            "/api/create-payment": {
                "post": {
                    "summary": "Create a PaymentIntent; idempotency keys are scoped to the caller",
                    "description": "An API client sends the order (amount and currency "
                    "required). A checkout session's browser sends nothing, or values equal to "
                    "the session's (409 checkout_session_mismatch otherwise); the session is the "
                    "key, so it has one PaymentIntent. An ended session is 410.",
                    "security": [{"apiClient": []}, {"checkoutSession": []}],
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
                                # Printable ASCII, spaces allowed inside (the ends are trimmed).
                                "pattern": "^[\\x20-\\x7e]*[\\x21-\\x7e][\\x20-\\x7e]*$",
                            },
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["amount", "currency"],
                                    "properties": ORDER_PROPERTIES,
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "created, or replayed for the same Idempotency-Key",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["success", "clientSecret", "paymentIntentId"],
                                        "properties": {
                                            "success": {"const": True},
                                            "clientSecret": {"type": "string"},
                                            "paymentIntentId": {"type": "string"},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 402, 409, 410, 413, 415, 429, 502, 503),
                    },
                }
            },
            "/api/payments/{payment_intent_id}": {
                "get": {
                    "summary": "A payment's status as our ledger knows it",
                    "description": "Readable with the PaymentIntent's client secret "
                    "(X-Client-Secret) or the admin token; otherwise 404, as for an unknown id.",
                    "parameters": [
                        {
                            "name": "payment_intent_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                        },
                        {
                            "name": "X-Client-Secret",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "the payment",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Payment"}
                                }
                            },
                        },
                        **_errors(404, 429, 503),
                    },
                }
            },
            "/webhook": {
                "post": {
                    "summary": "Stripe webhook endpoint (signed events only)",
                    "parameters": [
                        {
                            "name": "Stripe-Signature",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "verified and queued",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["received"],
                                        "properties": {"received": {"const": True}},
                                    }
                                }
                            },
                        },
                        **_errors(400, 413, 503),
                    },
                }
            },
            **ADMIN_PAYMENT_PATHS,
            "/healthz": {
                "get": {
                    "summary": "The process is alive",
                    "responses": {
                        "200": {
                            "description": "alive",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"status": {"type": "string"}},
                                    }
                                }
                            },
                        }
                    },
                }
            },
        },
    }
