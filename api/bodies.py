"""Reading request bodies with their limits checked before any work is done."""

from __future__ import annotations

import json
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

# Stripe's events are a few kilobytes; anything near this is not a Stripe event.
MAX_WEBHOOK_BYTES = 512 * 1024
# The largest valid create-payment body (50 metadata keys of 40 characters with values of 500)
# is under 30 KiB; a body past this is refused before it is read or parsed.
MAX_API_BODY_BYTES = 64 * 1024


class InvalidJson(Exception):
    """The body does not parse as JSON (nesting too deep for the parser included)."""


def read_json_body(limit: int) -> Any:
    """The request's JSON; 413 past ``limit`` before anything is parsed."""
    raw = read_capped_body(limit)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidJson() from None


def read_capped_body(limit: int) -> bytes:
    """The request body, or 413 once it is longer than ``limit``, without reading past it.

    A declared Content-Length is checked before anything is read. A chunked body has none, and
    Werkzeug's own limit silently truncates it (a truncated webhook would then fail its
    signature with a misleading 400), so read one byte past the limit and refuse.
    """
    if request.content_length is not None:
        if request.content_length > limit:
            raise RequestEntityTooLarge()
        return request.get_data(cache=False)
    if not request.environ.get("wsgi.input_terminated"):
        return b""  # a server that cannot frame a chunked body: nothing is safe to read
    body: bytes = request.environ["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        raise RequestEntityTooLarge()
    return body
