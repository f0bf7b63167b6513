"""Run localstripe bound to one address (127.0.0.1 by default).

Workaround, dev and tests only: localstripe's own ``localstripe`` command always listens on every
interface (``::``). We run its aiohttp app ourselves so the stand-in is reachable from this machine
only.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aiohttp import web
from localstripe import resources
from localstripe.server import app

from devtools import (
    stripe_idempotency,
    stripe_lifecycle,
    stripe_test_mode,
    stripe_webhook_endpoints,
)


def _skip_disk_snapshots() -> None:
    # Workaround: localstripe pickles its whole store to /tmp/localstripe.pickle on every write,
    # which slows it down as objects pile up and makes two instances overwrite one file. We always
    # start from scratch, so the snapshot is never read: skip writing it.
    resources.Store.dump_to_disk = lambda self: None


# The browser double of Stripe.js lives with the tests that use it; dev serves the same file.
STRIPE_JS_DOUBLE = Path(__file__).resolve().parent / "stripe_js_double.js"


def _add_stripe_js_double(secret_key: str, port: int) -> None:
    """Dev only: serve the Stripe.js test double at /_config/stripe-double.js, and relay calls
    to this stand-in with the test key (a browser cannot send it without a CORS preflight,
    which localstripe does not answer). Lets a person pay on the checkout page after
    `make run`; real Stripe.js talks to real Stripe only."""
    from aiohttp import ClientSession

    base = f"http://127.0.0.1:{port}"

    async def script(request: web.Request) -> web.Response:
        text = STRIPE_JS_DOUBLE.read_text().replace("__PROXY__", f"{base}/_config/relay")
        return web.Response(text=text, content_type="application/javascript")

    async def relay(request: web.Request) -> web.Response:
        body = await request.read()
        async with (
            ClientSession() as session,
            session.post(
                base + "/" + request.match_info["path"],
                data=body,
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Authorization": f"Bearer {secret_key}",
                },
            ) as upstream,
        ):
            return web.Response(
                body=await upstream.read(),
                status=upstream.status,
                content_type="application/json",
            )

    app.router.add_get("/_config/stripe-double.js", script)
    # Under /_config/, which localstripe's own auth leaves open (and adds CORS headers to).
    app.router.add_post("/_config/relay/{path:.*}", relay)


def teach_stripe(stand_in: web.Application) -> None:
    """What every run of the stand-in (dev, tests, chaos) is taught of Stripe."""
    # Started from scratch every time (like `localstripe --from-scratch`): nothing is loaded.
    _skip_disk_snapshots()
    stripe_idempotency.install(stand_in)
    # Declines, 3-D Secure and their events at confirm, as Stripe's test mode answers them.
    stripe_test_mode.install(stand_in)
    # What follows a payment: refunds, capture, cancellation, disputes, with Stripe's events
    # in Stripe's shape (amount_received, amount_capturable, pending_webhooks, request, ...).
    stripe_lifecycle.install(stand_in)
    # Several endpoints, and deleting one: an endpoint's migration to a new API version.
    stripe_webhook_endpoints.install(stand_in)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument(
        "--serve-stripe-js-double",
        action="store_true",
        help="dev: also serve the Stripe.js test double (needs STRIPE_SECRET_KEY)",
    )
    args = parser.parse_args()
    if args.serve_stripe_js_double:
        from shared.config import load_settings

        _add_stripe_js_double(load_settings().stripe_secret_key, args.port)
    teach_stripe(app)
    logging.basicConfig(level=logging.INFO)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
