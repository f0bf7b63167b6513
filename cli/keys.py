"""`payments keys`: encryption keys for stored event payloads."""

from __future__ import annotations

import sys

import click
from sqlalchemy import func, select

from cli.common import format_table, operator_runtime
from shared.effects.relay import rotate_effect_payloads
from shared.infra.crypto import generate_key, rotate_stored_payloads
from shared.models import StripeEvent


@click.group()
def keys() -> None:
    """Encryption keys for stored event payloads."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new key, to put first in PAYMENTS_ENCRYPTION_KEYS."""

    click.echo(generate_key())


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored payload under the first key of PAYMENTS_ENCRYPTION_KEYS.

    Put the new key first, keep the old ones after it, deploy, run this; then the old keys can
    be removed.
    """

    rt, _ = operator_runtime()
    with rt.sessions() as session:
        total = session.execute(select(func.count()).select_from(StripeEvent)).scalar_one()
    with click.progressbar(length=total, label="re-encrypting", file=sys.stderr) as bar:
        rotated, encrypted = rotate_stored_payloads(rt.sessions, rt.cipher, progress=bar.update)
    click.echo(
        format_table(
            ["events", "re-encrypted", "encrypted from plaintext", "already current"],
            [[str(total), str(rotated), str(encrypted), str(total - rotated - encrypted)]],
        )
    )
    click.echo(f"side effects re-encrypted: {rotate_effect_payloads(rt.sessions, rt.cipher)}")
