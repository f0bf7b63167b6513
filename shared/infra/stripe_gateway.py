"""The one place that talks to the Stripe API.

Services receive a ``StripeGateway`` rather than calling the SDK's globals, so that the API key is
never module state and tests or dev tooling can hand in another implementation of the same calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import stripe

from shared.config import STRIPE_MAX_NETWORK_RETRIES, Settings


@dataclass(frozen=True)
class CreatedIntent:
    id: str
    client_secret: str
    status: str
    amount: int
    currency: str
    metadata: dict[str, str]
    created: int


class PaymentGateway(Protocol):
    def create_payment_intent(
        self,
        *,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        idempotency_key: str | None,
        capture_method: str | None = None,
    ) -> CreatedIntent: ...

    def retrieve_payment_intent(self, payment_intent_id: str) -> CreatedIntent: ...


class PaymentIntentReader(Protocol):
    """Stripe's objects as they are now, for handlers settling a tie between two events; each
    None when Stripe does not know the id."""

    def current_payment_intent(self, payment_intent_id: str) -> dict[str, Any] | None: ...

    def current_refund(self, refund_id: str) -> dict[str, Any] | None: ...

    def current_dispute(self, dispute_id: str) -> dict[str, Any] | None: ...


class OperationsGateway(Protocol):
    """The operators' calls after a payment: each answers Stripe's object as a dict (a
    PaymentIntent without its client secret), and is sent with the idempotency key given."""

    def create_refund(
        self,
        payment_intent_id: str,
        *,
        amount: int | None,
        reason: str | None,
        idempotency_key: str,
    ) -> dict[str, Any]: ...

    def capture_payment_intent(
        self, payment_intent_id: str, *, amount: int | None, idempotency_key: str
    ) -> dict[str, Any]: ...

    def cancel_payment_intent(
        self, payment_intent_id: str, *, reason: str | None, idempotency_key: str
    ) -> dict[str, Any]: ...

    def current_payment_intent(self, payment_intent_id: str) -> dict[str, Any] | None: ...

    def current_refund(self, refund_id: str) -> dict[str, Any] | None: ...


def make_stripe_client(settings: Settings) -> stripe.StripeClient:
    base_addresses: Any = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
    return stripe.StripeClient(
        settings.stripe_secret_key,
        # One version for every call, chosen in the settings, never whatever a default becomes.
        stripe_version=settings.stripe_api_version,
        base_addresses=base_addresses,
        # The SDK retries connection errors, 409s and 5xx with its own idempotency key.
        max_network_retries=STRIPE_MAX_NETWORK_RETRIES,
        # requests is a dependency of the stripe SDK; its client is the one that takes a timeout.
        http_client=stripe.RequestsClient(timeout=settings.stripe_timeout_seconds),
    )


def _intent(resource: Any) -> CreatedIntent:
    obj = resource.to_dict()
    return CreatedIntent(
        id=obj["id"],
        client_secret=obj["client_secret"],
        status=obj["status"],
        amount=int(obj["amount"]),
        currency=obj["currency"],
        # We store the metadata we sent, never this echo; a malformed echo must not turn a
        # created PaymentIntent into a 500 (the stand-in answers numeric keys with a list).
        metadata=obj["metadata"] if isinstance(obj.get("metadata"), dict) else {},
        created=int(obj["created"]),
    )


class StripeGateway:
    def __init__(self, client: stripe.StripeClient) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeGateway:
        return cls(make_stripe_client(settings))

    def create_payment_intent(
        self,
        *,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        idempotency_key: str | None,
        capture_method: str | None = None,
    ) -> CreatedIntent:
        params: Any = {"amount": amount, "currency": currency, "metadata": metadata}
        if capture_method is not None:
            params["capture_method"] = capture_method
        options: Any = {"idempotency_key": idempotency_key} if idempotency_key else {}
        return _intent(self._client.v1.payment_intents.create(params=params, options=options))

    def retrieve_payment_intent(self, payment_intent_id: str) -> CreatedIntent:
        return _intent(self._client.v1.payment_intents.retrieve(payment_intent_id))

    def fetch_related(self, url: str) -> dict[str, Any] | None:
        """The object at a thin event's ``related_object.url`` as Stripe has it now; None when
        it no longer exists. Anything else Stripe answers raises (a transient error retries)."""
        try:
            response = self._client.raw_request("get", url)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise
        obj: dict[str, Any] = self._client.deserialize(response, api_mode="V1").to_dict()
        return obj

    def create_refund(
        self,
        payment_intent_id: str,
        *,
        amount: int | None,
        reason: str | None,
        idempotency_key: str,
    ) -> dict[str, Any]:
        params: Any = _given(payment_intent=payment_intent_id, amount=amount, reason=reason)
        refund = self._client.v1.refunds.create(params, {"idempotency_key": idempotency_key})
        return _with_request_id(refund, refund.to_dict())

    def capture_payment_intent(
        self, payment_intent_id: str, *, amount: int | None, idempotency_key: str
    ) -> dict[str, Any]:
        params: Any = _given(amount_to_capture=amount)
        options: Any = {"idempotency_key": idempotency_key}
        intent = self._client.v1.payment_intents.capture(payment_intent_id, params, options)
        return _with_request_id(intent, _without_secret(intent))

    def cancel_payment_intent(
        self, payment_intent_id: str, *, reason: str | None, idempotency_key: str
    ) -> dict[str, Any]:
        params: Any = _given(cancellation_reason=reason)
        options: Any = {"idempotency_key": idempotency_key}
        intent = self._client.v1.payment_intents.cancel(payment_intent_id, params, options)
        return _with_request_id(intent, _without_secret(intent))

    def current_payment_intent(self, payment_intent_id: str) -> dict[str, Any] | None:
        return _unless_unknown(lambda: self._client.v1.payment_intents.retrieve(payment_intent_id))

    def current_refund(self, refund_id: str) -> dict[str, Any] | None:
        return _unless_unknown(lambda: self._client.v1.refunds.retrieve(refund_id))

    def current_dispute(self, dispute_id: str) -> dict[str, Any] | None:
        return _unless_unknown(lambda: self._client.v1.disputes.retrieve(dispute_id))


def _unless_unknown(retrieve: Callable[[], Any]) -> dict[str, Any] | None:
    try:
        resource = retrieve()
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return None
        raise
    return _without_secret(resource)


# Where an operation's answer carries Stripe's id of the request that made it (Request-Id), for
# the operators' audit; ``shared.payments.operations`` takes it out before anything stores it.
STRIPE_REQUEST_ID = "_stripe_request_id"


def _with_request_id(resource: Any, answer: dict[str, Any]) -> dict[str, Any]:
    response = getattr(resource, "last_response", None)
    answer[STRIPE_REQUEST_ID] = getattr(response, "request_id", None)
    return answer


def _given(**params: Any) -> dict[str, Any]:
    """The parameters that have a value: Stripe's defaults stand for the others."""
    return {name: value for name, value in params.items() if value is not None}


def _without_secret(resource: Any) -> dict[str, Any]:
    intent: dict[str, Any] = resource.to_dict()
    # Never let the client secret travel further than this call.
    intent.pop("client_secret", None)
    return intent
