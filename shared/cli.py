"""``payments``: the operator CLI."""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Any

import click
import requests

from shared.config import ConfigError, Settings, load_settings
from shared.infra.crypto import PayloadCipher
from shared.ledger.webhooks import EventRefused, EventScope
from shared.observability.logs import configure_logging


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


@click.group()
def main() -> None:
    """Operate the Stripe payments service."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create the database if it is absent and migrate it to the latest schema."""
    from shared.db import upgrade

    settings = _settings()
    configure_logging(settings.log_level)
    upgrade(settings.database_url)
    click.echo("database is at the latest schema")


@main.group()
def webhook() -> None:
    """The Stripe webhook endpoint."""


def _needed_event_types(settings: Settings) -> list[str]:
    """The event types our handlers need, HANDLER_MODULES included: the subscription follows the
    registry, so a new handler's type cannot be left out of it."""
    from shared.ledger.handlers import load_handler_modules, registry

    load_handler_modules(settings.handler_modules)
    return registry.event_types()


@webhook.command("register")
@click.option("--url", required=True, help="Public URL of our POST /webhook endpoint.")
def webhook_register(url: str) -> None:
    """Register URL to receive Stripe's events.

    On real Stripe this creates a WebhookEndpoint and prints its signing secret, which goes into
    STRIPE_WEBHOOK_SECRET. On the stand-in (STRIPE_API_BASE set) it registers URL with the
    configured secret.
    """
    settings = _settings()
    events = _needed_event_types(settings)
    if settings.uses_stripe_stand_in:
        from shared.dev.standin import StandIn

        StandIn(settings).register_webhook(url, events)
        click.echo(f"stand-in at {settings.stripe_api_base} now posts events to {url}")
        return
    from shared.infra.stripe_gateway import make_stripe_client

    endpoint = make_stripe_client(settings).v1.webhook_endpoints.create(
        params={"url": url, "enabled_events": events}  # type: ignore[typeddict-item]
    )
    click.echo(f"created webhook endpoint {endpoint.id} for {url}")
    click.echo("set STRIPE_WEBHOOK_SECRET to this signing secret (shown once):")
    click.echo(endpoint.secret)


def _runtime() -> tuple[Settings, Any, Any]:
    from shared.db import make_engine, make_session_factory
    from shared.infra.broker import make_producer
    from shared.ledger.handlers import load_handler_modules

    settings = _settings()
    configure_logging("WARNING")
    load_handler_modules(settings.handler_modules)
    sessions = make_session_factory(make_engine(settings.database_url))
    return settings, sessions, make_producer(settings)


def format_table(headers: list[str], rows: list[list[str]], max_width: int = 60) -> str:
    """A plain-text table: columns padded to their widest cell, cells cut at ``max_width``."""
    cells = [[h.upper() for h in headers]] + [
        [c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


_DATE = click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"])


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.replace(tzinfo=dt.UTC)


def _filters(
    event_type: str | None, handler: str | None, since: dt.datetime | None, error: str | None
) -> Any:
    from shared.ledger.dlq import RunFilter

    return RunFilter(event_type, handler, _utc(since), error)


def _filter_options(func: Any) -> Any:
    func = click.option("--error", help="Only runs whose error contains this text.")(func)
    func = click.option("--since", type=_DATE, help="Only runs dead since this UTC date/time.")(
        func
    )
    func = click.option("--handler", help="Only runs of this handler.")(func)
    func = click.option("--type", "event_type", help="Only events of this type.")(func)
    return func


def _run_table(rows: list[Any]) -> str:
    return format_table(
        ["run", "event type", "attempts", "replays", "dead since", "error"],
        [
            [
                r.run_id,
                r.event_type,
                str(r.attempts),
                str(r.replays),
                r.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
                r.error_line,
            ]
            for r in rows
        ],
    )


@main.group()
def dlq() -> None:
    """The dead-letter list: handler runs that used up their attempts."""


@dlq.command("list")
@_filter_options
@click.option("--limit", default=200, show_default=True, help="Show at most this many runs.")
def dlq_list(
    event_type: str | None,
    handler: str | None,
    since: dt.datetime | None,
    error: str | None,
    limit: int,
) -> None:
    """List dead runs, oldest first."""
    from shared.ledger.dlq import count_dead, list_dead

    _, sessions, _ = _runtime()
    rows = list_dead(sessions, _filters(event_type, handler, since, error), limit=limit)
    if not rows:
        click.echo("no dead runs match")
        return
    click.echo(_run_table(rows))
    click.echo(f"\n{len(rows)} shown, {count_dead(sessions)} dead in all")


@dlq.command("replay")
@click.argument("run_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Every dead run matching the filters.")
@_filter_options
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; change nothing.")
def dlq_replay(
    run_ids: tuple[str, ...],
    replay_all: bool,
    event_type: str | None,
    handler: str | None,
    since: dt.datetime | None,
    error: str | None,
    dry_run: bool,
) -> None:
    """Send dead runs back to the queue: RUN_IDS (evt_.../handler, or evt_... for all of an
    event's dead runs), or --all with optional filters."""
    from shared.infra.broker import enqueue_run
    from shared.ledger.dlq import replay_dead

    if bool(run_ids) == replay_all:
        raise click.UsageError("name run ids, or give --all (with optional filters), not both")
    _, sessions, producer = _runtime()
    filters = _filters(event_type, handler, since, error)
    try:
        chosen = replay_dead(sessions, run_ids=run_ids, filters=filters, dry_run=True)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not chosen:
        click.echo("no dead runs match")
        return
    click.echo(_run_table(chosen))
    if dry_run:
        click.echo(f"\ndry run: {len(chosen)} run(s) would be replayed")
        return
    with click.progressbar(length=len(chosen), label="replaying", file=sys.stderr) as bar:
        replayed = replay_dead(
            sessions,
            run_ids=run_ids,
            filters=filters,
            enqueue=lambda event_id, name: enqueue_run(producer, event_id, name),
            progress=bar.update,
            batch_size=100,
        )
    click.echo(f"\n{len(replayed)} run(s) sent back to the queue")


@main.group()
def events() -> None:
    """Recorded Stripe events."""


@events.command("replay")
@click.argument("event_id")
@click.option("--handler", help="Re-run only this handler, even if it already finished.")
def events_replay(event_id: str, handler: str | None) -> None:
    """Re-run EVENT_ID's handlers that did not finish (or only --handler). An event we never
    received is fetched from Stripe first."""
    from shared.infra.broker import enqueue_run
    from shared.infra.stripe_gateway import make_stripe_client
    from shared.ledger.dlq import replay_event
    from shared.ledger.events import EventNotFound
    from shared.ledger.handlers import UnknownHandler
    from shared.ledger.reconcile import StripeEventSource

    settings, sessions, producer = _runtime()
    source = StripeEventSource(make_stripe_client(settings))
    try:
        names = replay_event(
            sessions,
            event_id,
            cipher=PayloadCipher(settings.encryption_keys),
            handler=handler,
            fetch_event=source.retrieve,
            enqueue=lambda evt, name: enqueue_run(producer, evt, name),
            scope=EventScope.of(settings),
        )
    except UnknownHandler as exc:
        raise click.UsageError(f"no handler named {exc}") from None
    except EventNotFound:
        raise click.ClickException(f"no event {event_id} here or at Stripe") from None
    except EventRefused as exc:
        raise click.ClickException(f"{event_id} refused, not recorded: {exc.code}") from None
    if not names:
        click.echo(f"{event_id}: every handler already finished; name one with --handler")
        return
    click.echo(format_table(["event", "handler"], [[event_id, name] for name in names]))
    click.echo(f"\n{len(names)} run(s) sent to the queue")


@events.group("quarantine")
def quarantine() -> None:
    """Queued bodies no configured key decrypted within UNDECRYPTABLE_RETRY_SECONDS."""


@quarantine.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include bodies already recovered.")
def quarantine_list(show_all: bool) -> None:
    """List quarantined bodies (never their content), oldest first."""
    from shared.ledger.events import list_quarantined

    _, sessions, _ = _runtime()
    rows = list_quarantined(sessions, include_recovered=show_all)
    if not rows:
        click.echo("nothing quarantined")
        return
    stamp = "%Y-%m-%d %H:%M:%S"
    click.echo(
        format_table(
            ["id", "source", "first attempt", "quarantined", "attempts", "recovered as"],
            [
                [
                    str(r.id),
                    r.source,
                    r.first_attempt_at.strftime(stamp),
                    r.quarantined_at.strftime(stamp),
                    str(r.attempts),
                    r.recovered_event_id or "",
                ]
                for r in rows
            ],
        )
    )


@quarantine.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "retry_all", is_flag=True, help="Every body not yet recovered.")
def quarantine_retry(ids: tuple[int, ...], retry_all: bool) -> None:
    """Ingest quarantined bodies (IDS, or --all) under the configured keys: put the key that
    encrypted them in PAYMENTS_ENCRYPTION_KEYS (last) first. Exits 1 if any stays unread."""
    from shared.infra.broker import enqueue_run
    from shared.ledger.events import recover_quarantined

    if bool(ids) == retry_all:
        raise click.UsageError("name quarantine ids, or give --all, not both")
    settings, sessions, producer = _runtime()
    results = recover_quarantined(
        sessions,
        None if retry_all else ids,
        PayloadCipher(settings.encryption_keys),
        EventScope.of(settings),
    )
    for result in results:
        for name in result.pending_handlers:
            enqueue_run(producer, result.event_id or "", name)
    click.echo(
        format_table(
            ["id", "outcome", "event"],
            [[str(r.quarantine_id), r.outcome, r.event_id or ""] for r in results],
        )
    )
    if any(r.outcome != "recovered" for r in results):
        raise click.ClickException("some bodies were not recovered (see outcome)")


@main.command("reconcile")
@click.option("--since", type=_DATE, help="List Stripe events from this UTC date/time.")
def reconcile_command(since: dt.datetime | None) -> None:
    """Ingest every Stripe event since the checkpoint (or --since) that we never recorded."""
    from shared.infra.broker import enqueue_run
    from shared.infra.stripe_gateway import make_stripe_client
    from shared.ledger.reconcile import StripeEventSource, reconcile

    settings, sessions, producer = _runtime()
    result = reconcile(
        sessions,
        StripeEventSource(make_stripe_client(settings)),
        overlap_seconds=settings.reconcile_overlap_seconds,
        lookback_seconds=settings.reconcile_lookback_seconds,
        cipher=PayloadCipher(settings.encryption_keys),
        scope=EventScope.of(settings),
        since=_utc(since),
    )
    if result.skipped:
        raise click.ClickException("another reconciler is running; try again shortly")
    for event_id, name in result.pending_runs:
        enqueue_run(producer, event_id, name)
    click.echo(
        format_table(
            ["since", "listed", "recovered", "runs queued"],
            [
                [
                    result.since.strftime("%Y-%m-%d %H:%M:%S"),
                    str(result.listed),
                    str(result.recovered),
                    str(len(result.pending_runs)),
                ]
            ],
        )
    )


@main.command("worker-check")
@click.option(
    "--timeout", default=15.0, show_default=True, help="Seconds to wait for the canaries."
)
def worker_check(timeout: float) -> None:
    """Exit non-zero unless a worker answers a ping and consumes a canary from every queue."""
    from shared.observability.health import check_workers

    _, sessions, producer = _runtime()
    result = check_workers(producer, sessions, timeout)
    click.echo(
        format_table(
            ["check", "result"],
            [["ping", ", ".join(result.pinged) or "no worker answered"]]
            + [
                [f"canary on {queue}", "consumed" if ok else "NOT consumed"]
                for queue, ok in result.queues_consumed.items()
            ],
        )
    )
    if not result.healthy:
        raise SystemExit(1)


@main.command("doctor")
@click.option(
    "--web",
    help="Our web process, e.g. http://127.0.0.1:8000: check it verifies STRIPE_WEBHOOK_SECRET.",
)
@click.option(
    "--worker-timeout", default=10.0, show_default=True, help="Seconds to wait for the canaries."
)
def doctor_command(web: str | None, worker_timeout: float) -> None:
    """Check the configuration and what it points at (Stripe keys and webhooks, PostgreSQL,
    migrations, Redis, workers); say in plain words what is wrong. Exits 1 on any problem."""
    from shared import doctor

    configure_logging("ERROR")
    settings, loaded = doctor.configuration(load_settings)
    findings = [loaded]
    if settings is not None:
        findings += doctor.diagnose(settings, _needed_event_types(settings), web, worker_timeout)
    click.echo(doctor.render(findings))
    if any(f.status == doctor.PROBLEM for f in findings):
        raise SystemExit(1)


@main.group()
def keys() -> None:
    """Encryption keys for stored event payloads."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new key, to put first in PAYMENTS_ENCRYPTION_KEYS."""
    from shared.infra.crypto import generate_key

    click.echo(generate_key())


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored payload under the first key of PAYMENTS_ENCRYPTION_KEYS.

    Put the new key first, keep the old ones after it, deploy, run this; then the old keys can
    be removed.
    """
    from sqlalchemy import func, select

    from shared.infra.crypto import rotate_stored_payloads
    from shared.models import StripeEvent

    settings, sessions, _ = _runtime()
    with sessions() as session:
        total = session.execute(select(func.count()).select_from(StripeEvent)).scalar_one()
    with click.progressbar(length=total, label="re-encrypting", file=sys.stderr) as bar:
        rotated, encrypted = rotate_stored_payloads(
            sessions, PayloadCipher(settings.encryption_keys), progress=bar.update
        )
    click.echo(
        format_table(
            ["events", "re-encrypted", "encrypted from plaintext", "already current"],
            [[str(total), str(rotated), str(encrypted), str(total - rotated - encrypted)]],
        )
    )


@main.group()
def dev() -> None:
    """Dev tooling for the local Stripe stand-in."""


@dev.command("pay")
@click.argument("payment_intent_id")
@click.option("--card", default="4242424242424242", show_default=True, help="Test card number.")
def dev_pay(payment_intent_id: str, card: str) -> None:
    """Confirm PAYMENT_INTENT_ID at the stand-in with a test card, as Stripe.js would."""
    from shared.dev.standin import StandIn

    intent = StandIn(_settings()).pay(payment_intent_id, card)
    click.echo(f"{payment_intent_id} is {intent['status']} at the stand-in")
    if error := intent.get("last_payment_error"):
        # The decline as Stripe words it; our ledger gets it from payment_intent.payment_failed.
        click.echo(f"declined: {error.get('decline_code') or error['code']}: {error['message']}")


@dev.command("authenticate")
@click.argument("payment_intent_id")
@click.option("--fail", is_flag=True, help="Fail the 3-D Secure challenge instead.")
def dev_authenticate(payment_intent_id: str, fail: bool) -> None:
    """Complete the 3-D Secure challenge of PAYMENT_INTENT_ID at the stand-in."""
    from shared.dev.standin import StandIn

    intent = StandIn(_settings()).authenticate(payment_intent_id, success=not fail)
    click.echo(f"{payment_intent_id} is {intent['status']} at the stand-in")


@dev.command("trigger")
@click.argument("event")
def dev_trigger(event: str) -> None:
    """Create a payment at the stand-in and fire EVENT's scenario, like `stripe trigger`.

    EVENT: payment_intent.succeeded, payment_intent.payment_failed or
    payment_intent.requires_action."""
    from shared.dev.standin import StandIn
    from shared.dev.trigger import SCENARIOS, UnknownScenario, trigger

    try:
        intent = trigger(StandIn(_settings()), event)
    except UnknownScenario as exc:
        raise click.BadParameter(str(exc), param_hint="EVENT") from None
    click.echo(f"{intent['id']} is {intent['status']} at the stand-in")
    click.echo("events sent to the webhook: " + ", ".join(SCENARIOS[event].events))


@dev.command("bootstrap")
@click.option("--web", default="http://127.0.0.1:8000", show_default=True)
@click.option("--timeout", default=60.0, show_default=True)
def dev_bootstrap(web: str, timeout: float) -> None:
    """Wait for the stand-in and the web process, register the webhook, print how to try it."""
    from shared.dev.standin import StandIn

    settings = _settings()
    deadline = time.monotonic() + timeout
    stand_in_auth = (settings.stripe_secret_key, "")
    for url, auth in (
        (f"{settings.stripe_api_base}/v1/events", stand_in_auth),
        (f"{web}/healthz", None),
    ):
        while True:
            try:
                requests.get(url, auth=auth, timeout=5)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise click.ClickException(f"{url} did not answer within {timeout}s") from None
                time.sleep(0.5)
    # The same event types as `webhook register`: whatever the handler registry needs.
    StandIn(settings).register_webhook(f"{web}/webhook", _needed_event_types(settings))
    click.echo(
        f"""
The stack is up: API {web}, Flower http://127.0.0.1:5555, stand-in {settings.stripe_api_base}.
Try a payment (in another terminal, from this directory):

  set -a; . ./.env.dev; set +a
  curl -s -X POST {web}/api/create-payment -H 'Content-Type: application/json' \\
       -H "Authorization: Bearer ${{API_CLIENT_KEYS#*:}}" -H 'Idempotency-Key: order-123' \\
       -d '{{"amount": 1000, "currency": "usd", "metadata": {{"orderId": "123"}}}}'
  .venv/bin/payments dev pay pi_... --card 4242424242424242
  curl -s {web}/api/payments/pi_... -H 'X-Client-Secret: pi_..._secret_...'
"""
    )


if __name__ == "__main__":
    sys.exit(main())
