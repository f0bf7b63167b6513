"""`payments events`: replaying a recorded event, pruning old ones, and the quarantine of
unreadable bodies."""

from __future__ import annotations

import datetime as dt

import click

from cli.common import format_table, operator_runtime
from cli.held import events_held, events_release
from shared.ledger.event_rows import EventNotFound
from shared.ledger.event_rules import EventRefused
from shared.ledger.handlers import UnknownHandler
from shared.ledger.recovery.quarantine import list_quarantined, recover_quarantined
from shared.ledger.recovery.reconcile import StripeEventSource
from shared.ledger.recovery.replay import replay_event
from shared.ledger.retention import (
    RetentionTooShort,
    check_retention,
    count_prunable,
    horizon_for,
    prune,
)
from shared.ledger.runs.enqueue import enqueue_handler_run


@click.group()
def events() -> None:
    """Recorded Stripe events."""


events.add_command(events_held)
events.add_command(events_release)


@events.command("replay")
@click.argument("event_id")
@click.option("--handler", help="Re-run only this handler, even if it already finished.")
def events_replay(event_id: str, handler: str | None) -> None:
    """Re-run EVENT_ID's handlers that did not finish (or only --handler). An event we never
    received is fetched from Stripe first."""

    rt, producer = operator_runtime()
    source = StripeEventSource(rt.stripe_client)
    try:
        names = replay_event(
            rt.sessions,
            event_id,
            cipher=rt.cipher,
            handler=handler,
            fetch_event=source.retrieve,
            enqueue=lambda evt, name: enqueue_handler_run(producer, rt.registry, evt, name),
            scope=rt.scope,
            registry=rt.registry,
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

    rt, _ = operator_runtime()
    rows = list_quarantined(rt.sessions, include_recovered=show_all)
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

    if bool(ids) == retry_all:
        raise click.UsageError("name quarantine ids, or give --all, not both")
    rt, producer = operator_runtime()
    results = recover_quarantined(
        rt.sessions,
        None if retry_all else ids,
        rt.cipher,
        rt.scope,
        registry=rt.registry,
    )
    for result in results:
        for name in result.pending_handlers:
            enqueue_handler_run(producer, rt.registry, result.event_id or "", name)
    click.echo(
        format_table(
            ["id", "outcome", "event"],
            [[str(r.quarantine_id), r.outcome, r.event_id or ""] for r in results],
        )
    )
    if any(r.outcome != "recovered" for r in results):
        raise click.ClickException("some bodies were not recovered (see outcome)")


@events.command("prune")
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(min=1),
    required=True,
    metavar="DAYS",
    help="Forget events received more than DAYS days ago (at least 31: Stripe may resend "
    "younger ones).",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
def events_prune(days: int, dry_run: bool) -> None:
    """Delete old events and their runs, keeping every event with a run pending or dead."""

    rt, _ = operator_runtime()
    older_than = dt.timedelta(days=days)
    lookback = rt.settings.reconcile_lookback_seconds
    try:
        check_retention(older_than, lookback)
    except RetentionTooShort as exc:
        raise click.ClickException(str(exc)) from None
    if dry_run:
        horizon = horizon_for(older_than)
        count = count_prunable(rt.sessions, horizon)
        click.echo(f"{count} event(s) received before {horizon:%Y-%m-%d %H:%M:%S} would be pruned")
        return
    result = prune(rt.sessions, older_than, lookback)
    click.echo(
        f"pruned {result.events} event(s) received before {result.horizon:%Y-%m-%d %H:%M:%S}, "
        f"{result.canaries} worker-check canary row(s), {result.abandoned_claims} abandoned "
        f"create-payment claim(s) and {result.checkout_sessions} ended checkout session(s)"
    )
