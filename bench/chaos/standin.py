"""The Stripe stand-in for the chaos suite: localstripe plus one route to hold our own events.

Workaround, chaos suite only: localstripe makes events only for what it simulates. The suite also
sends Stripe-shaped events of its own (built from Stripe's fixtures); on real Stripe every event
is listed by the Events API, and the reconciler depends on that. ``POST /_config/chaos/events``
(localstripe leaves /_config/ unauthenticated) stores such an event in localstripe's event list
(so ``GET /v1/events`` lists it, as Stripe would) and returns it; the suite then signs and
delivers it itself, with duplicates and reordering.
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web
from localstripe.resources import Event, StripeObject
from localstripe.server import app

from devtools.localstripe_server import teach_stripe


async def inject_event(request: web.Request) -> web.Response:
    body = await request.json()
    event = Event.__new__(Event)
    StripeObject.__init__(event)  # assigns an evt_ id and puts it in the store
    event.type = body["type"]
    event.data = {"object": body["object"]}
    event.api_version = body.get("api_version", "2025-10-29.clover")
    if "created" in body:
        event.created = int(body["created"])
    # Tests of the event-scope checks list events of the other mode or of a connected account.
    if "livemode" in body:
        event.livemode = bool(body["livemode"])
    if "account" in body:
        event.account = body["account"]
    return web.json_response(event._export())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    teach_stripe(app)
    app.router.add_post("/_config/chaos/events", inject_event)
    logging.basicConfig(level=logging.WARNING)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
