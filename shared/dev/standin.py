"""Driving the local Stripe stand-in (localstripe) the way a customer's browser drives Stripe.

Dev and test tooling only. On real Stripe, the card is collected and the PaymentIntent confirmed
by Stripe.js in the customer's browser; our servers never see a card number. localstripe has no
such front end that works here, so these helpers call its API directly with test card numbers.
"""

from __future__ import annotations

from typing import Any

import requests

from shared.config import Settings

WEBHOOK_ENDPOINT_ID = "payments-service"


class StandInError(Exception):
    pass


class StandIn:
    def __init__(self, settings: Settings, timeout: float = 10) -> None:
        if not settings.stripe_api_base:
            raise StandInError("STRIPE_API_BASE is not set: these commands only drive the stand-in")
        self._base = settings.stripe_api_base
        self._auth = (settings.stripe_secret_key, "")
        self._timeout = timeout
        self._settings = settings

    def _post(self, path: str, data: dict[str, Any] | list[tuple[str, str]]) -> dict[str, Any]:
        response = requests.post(
            self._base + path, data=data, auth=self._auth, timeout=self._timeout
        )
        body: dict[str, Any] = response.json() if response.content else {}
        if response.status_code >= 400:
            raise StandInError(f"POST {path}: HTTP {response.status_code} {body.get('error')}")
        return body

    def register_webhook(self, url: str, events: list[str] | None = None) -> None:
        """Point the stand-in's webhooks at ``url``, signed with our first configured secret."""
        data: list[tuple[str, str]] = [
            ("url", url),
            ("secret", self._settings.stripe_webhook_secrets[0]),
        ]
        data += [("events[]", event) for event in events or []]
        response = requests.post(
            f"{self._base}/_config/webhooks/{WEBHOOK_ENDPOINT_ID}", data=data, timeout=self._timeout
        )
        if response.status_code != 200:
            raise StandInError(f"webhook registration failed: HTTP {response.status_code}")

    def pay(self, payment_intent_id: str, card_number: str) -> dict[str, Any]:
        """Confirm the PaymentIntent with a test card, as Stripe.js does (and as the Stripe.js
        double does: the same two calls, so both meet the same declines).

        Returns the PaymentIntent. A declined card comes back as a PaymentIntent in
        ``requires_payment_method`` with ``last_payment_error`` (the confirm answers 402).
        """
        method = self._post(
            "/v1/payment_methods",
            {
                "type": "card",
                "card[number]": card_number,
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[cvc]": "123",
            },
        )
        try:
            self._post(
                f"/v1/payment_intents/{payment_intent_id}/confirm",
                {"payment_method": method["id"]},
            )
        except StandInError as exc:
            if "402" not in str(exc):
                raise
        return self.retrieve(payment_intent_id)

    def create_payment_intent(
        self, amount: int, currency: str, metadata: dict[str, str]
    ) -> dict[str, Any]:
        """A PaymentIntent made at the stand-in directly, as the Dashboard or `stripe trigger`
        would: our ledger learns of it from its events only."""
        data = {"amount": str(amount), "currency": currency}
        data.update({f"metadata[{key}]": value for key, value in metadata.items()})
        return self._post("/v1/payment_intents", data)

    def authenticate(self, payment_intent_id: str, *, success: bool = True) -> dict[str, Any]:
        """Complete (or fail) the 3-D Secure challenge of a PaymentIntent in requires_action."""
        intent = self.retrieve(payment_intent_id)
        return self._post(
            f"/v1/payment_intents/{payment_intent_id}/_authenticate",
            {"client_secret": intent["client_secret"], "success": "true" if success else "false"},
        )

    def retrieve(self, payment_intent_id: str) -> dict[str, Any]:
        response = requests.get(
            f"{self._base}/v1/payment_intents/{payment_intent_id}",
            auth=self._auth,
            timeout=self._timeout,
        )
        if response.status_code != 200:
            raise StandInError(f"PaymentIntent {payment_intent_id}: HTTP {response.status_code}")
        result: dict[str, Any] = response.json()
        return result

    def events(self) -> list[dict[str, Any]]:
        """Every event the stand-in holds (it lists them all, oldest first)."""
        response = requests.get(
            f"{self._base}/v1/events",
            auth=self._auth,
            params={"limit": 1000},
            timeout=self._timeout,
        )
        events: list[dict[str, Any]] = response.json()["data"]
        return events

    def clear(self) -> None:
        requests.delete(f"{self._base}/_config/data", timeout=self._timeout)
