"""The stand-in's webhook endpoints, as the migration to a new API version needs them: several
at once (localstripe keeps a dict of them, each with its own secret, and sends every event to
each), and deleting one (``DELETE /_config/webhooks/{id}``, which localstripe lacks).

Where this differs from Stripe: an endpoint here has no API version of its own; every endpoint
gets the same payload, the stand-in's, so a migration's "two payload versions of one event" are
two deliveries of one payload, each signed with its own endpoint's secret.
"""

from __future__ import annotations

from aiohttp import web
from localstripe import webhooks


async def _delete(request: web.Request) -> web.Response:
    removed = webhooks._webhooks.pop(request.match_info["id"], None)
    return web.Response(status=200 if removed is not None else 404)


def install(app: web.Application) -> None:
    app.router.add_delete("/_config/webhooks/{id}", _delete)
