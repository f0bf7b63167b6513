"""Driving the local Stripe stand-in (localstripe) the way a customer's browser drives Stripe.

Dev and test tooling only. On real Stripe, the card is collected and the PaymentIntent confirmed
by Stripe.js in the customer's browser; our servers never see a card number. localstripe has no
such front end that works here, so these helpers call its API directly with test card numbers.
"""

from __future__ import annotations

import time
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

    def register_webhook(
        self,
        url: str,
        events: list[str] | None = None,
        *,
        endpoint_id: str = WEBHOOK_ENDPOINT_ID,
        secret: str | None = None,
    ) -> None:
        """Point the stand-in's webhook endpoint ``endpoint_id`` at ``url``, signed with
        ``secret`` (our first configured one unless given)."""
        data: list[tuple[str, str]] = [
            ("url", url),
            ("secret", secret or self._settings.stripe_webhook_secrets[0]),
        ]
        data += [("events[]", event) for event in events or []]
        response = requests.post(
            f"{self._base}/_config/webhooks/{endpoint_id}", data=data, timeout=self._timeout
        )
        if response.status_code != 200:
            raise StandInError(f"webhook registration failed: HTTP {response.status_code}")

    def delete_webhook(self, endpoint_id: str) -> bool:
        """Delete an endpoint; False if the stand-in had none of that id."""
        response = requests.delete(
            f"{self._base}/_config/webhooks/{endpoint_id}", timeout=self._timeout
        )
        return response.status_code == 200

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
        self,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        capture_method: str | None = None,
    ) -> dict[str, Any]:
        """A PaymentIntent made at the stand-in directly, as the Dashboard or `stripe trigger`
        would: our ledger learns of it from its events only."""
        data = {"amount": str(amount), "currency": currency}
        data.update({f"metadata[{key}]": value for key, value in metadata.items()})
        if capture_method:
            data["capture_method"] = capture_method
        return self._post("/v1/payment_intents", data)

    def refund(
        self, payment_intent_id: str, amount: int | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        data = {"payment_intent": payment_intent_id, "amount": amount, "reason": reason}
        return self._post("/v1/refunds", {k: str(v) for k, v in data.items() if v is not None})

    def capture(self, payment_intent_id: str, amount: int | None = None) -> dict[str, Any]:
        data = {} if amount is None else {"amount_to_capture": str(amount)}
        return self._post(f"/v1/payment_intents/{payment_intent_id}/capture", data)

    def cancel(self, payment_intent_id: str, reason: str | None = None) -> dict[str, Any]:
        data = {} if reason is None else {"cancellation_reason": reason}
        return self._post(f"/v1/payment_intents/{payment_intent_id}/cancel", data)

    def dispute_of(
        self, payment_intent_id: str, status: str | None = None, timeout: float = 10
    ) -> dict[str, Any]:
        """The dispute a dispute test card brings, once the stand-in has opened it (and it has
        reached ``status``, when given)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self._get("/v1/disputes", {"payment_intent": payment_intent_id})["data"]
            if found and status in (None, found[0]["status"]):
                return dict(found[0])
            if time.monotonic() > deadline:
                raise StandInError(f"no dispute {status or ''} on {payment_intent_id} in time")
            time.sleep(0.2)

    def submit_evidence(self, dispute_id: str, text: str) -> dict[str, Any]:
        """Submit evidence; Stripe's test mode decides on ``winning_evidence`` (won) and
        ``losing_evidence`` (lost)."""
        return self._post(f"/v1/disputes/{dispute_id}", {"evidence[uncategorized_text]": text})

    def close_dispute(self, dispute_id: str) -> dict[str, Any]:
        """Accept the dispute (it is lost)."""
        return self._post(f"/v1/disputes/{dispute_id}/close", {})

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        response = requests.get(
            self._base + path, params=params, auth=self._auth, timeout=self._timeout
        )
        if response.status_code != 200:
            raise StandInError(f"GET {path}: HTTP {response.status_code}")
        body: dict[str, Any] = response.json()
        return body

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

    def events(self, since: int | None = None) -> list[dict[str, Any]]:
        """Every event the stand-in holds (it lists them all, oldest first), or those created
        at ``since`` or later."""
        params: dict[str, Any] = {"limit": 1000}
        if since is not None:
            params["created[gte]"] = since
        response = requests.get(
            f"{self._base}/v1/events", auth=self._auth, params=params, timeout=self._timeout
        )
        events: list[dict[str, Any]] = response.json()["data"]
        return events

    def clear(self) -> None:
        requests.delete(f"{self._base}/_config/data", timeout=self._timeout)
