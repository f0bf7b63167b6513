"""The stand-in's events and errors in Stripe's shape.

Every event the stand-in makes carries what Stripe's do besides localstripe's ``id``, ``type``,
``created``, ``livemode`` and ``data.object``: ``pending_webhooks`` (the endpoints it is sent
to), ``request`` (``id`` and ``idempotency_key`` of the API call that caused it, both null for
what Stripe does by itself, such as opening a dispute) and, for the events that report a change
(``charge.refunded``, ``charge.dispute.updated``), ``data.previous_attributes``. Every answer
carries a ``Request-Id`` header, as Stripe's do. An event's object is a snapshot: it never
changes after the event is made (localstripe's shared nested values with the live object).

Differences left: ``api_version`` stays localstripe's (its objects have that version's shape);
``pending_webhooks`` is the number of endpoints the event is sent to, never counted down.
"""

from __future__ import annotations

import contextvars
import copy
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from localstripe import webhooks
from localstripe.errors import UserError
from localstripe.resources import Event
from localstripe.webhooks import schedule_webhook

# The API call being answered: (request id, Idempotency-Key); None outside one.
_REQUEST: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar(
    "stand_in_request", default=None
)
_original: dict[str, Any] = {}


def _init(self: Any, type: str, data: Any) -> None:
    _original["init"](self, type, data)
    # localstripe copies the object's top level only: a list or nested dict changed later
    # (a dispute's balance_transactions) would change the event too. Stripe's never change.
    self.data = copy.deepcopy(self.data)
    self.pending_webhooks = sum(
        1 for hook in webhooks._webhooks.values() if hook.events is None or type in hook.events
    )
    request = _REQUEST.get()
    self.request = {
        "id": request[0] if request else None,
        "idempotency_key": request[1] if request else None,
    }


def emit(event_type: str, obj: Any, previous: dict[str, Any] | None = None) -> Any:
    """Make the event (listed by /v1/events at once) and post it to the registered webhooks."""
    event = Event(event_type, obj)
    if previous:
        event.data["previous_attributes"] = previous
    schedule_webhook(event)
    return event


def later(delay: float, action: Callable[[], object]) -> None:
    """Run ``action`` after ``delay`` seconds as Stripe's own doing: outside any API call, so
    its events have a null ``request``."""
    import asyncio

    asyncio.get_event_loop().call_later(delay, action, context=contextvars.Context())


def stripe_error(
    status: int, code: str, message: str, param: str | None = None, **extra: Any
) -> UserError:
    """An invalid_request_error as Stripe words it: code, message, param and doc_url."""
    body: dict[str, Any] = {
        "code": code,
        "doc_url": "https://docs.stripe.com/error-codes/" + code.replace("_", "-"),
        **extra,
    }
    if param is not None:
        body["param"] = param
    return UserError(status, message, body)


@web.middleware
async def _request_context(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request_id = "req_" + secrets.token_hex(7)
    token = _REQUEST.set((request_id, request.headers.get("Idempotency-Key")))
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["Request-Id"] = request_id
        raise
    finally:
        _REQUEST.reset(token)
    response.headers["Request-Id"] = request_id
    return response


def install(app: web.Application) -> None:
    if not _original:
        _original["init"] = Event.__init__
        Event.__init__ = _init
    # Outermost but for the idempotency middleware: a replayed answer makes no events.
    app.middlewares.insert(1 if app.middlewares else 0, _request_context)
