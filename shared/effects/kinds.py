"""How each kind of effect is delivered: the built-in ``http`` and ``email``, and any a shop
registers (``@effect_kinds.delivers("sms")``).

A deliverer is ``(payload, delivery) -> None``: it returns once the effect is done, raises
``FinalFailure`` when retrying cannot help (the effect is dead at once), and raises anything
else to be retried with backoff (shared.ledger.retry's policy, as for handler runs). It may run
more than once for one effect (a relay that dies after sending, before noting it): it must pass
``delivery.idempotency_key`` on, so that the receiver can drop the repeat.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import requests


@dataclass(frozen=True)
class Delivery:
    idempotency_key: str
    event_id: str
    handler: str
    name: str
    attempt: int


@dataclass(frozen=True)
class EffectSettings:
    """What the built-in kinds need from the deployment."""

    timeout_seconds: float = 10.0
    smtp_host: str = "localhost"
    smtp_port: int = 25
    email_from: str = "payments@localhost"

    @property
    def lease_seconds(self) -> float:
        """Longer than one delivery of a built-in kind can take: each of its network waits is
        bounded by the timeout, and an SMTP conversation has at most seven of them (connect,
        greeting, EHLO, MAIL, RCPT, DATA and its end); the rest is margin."""
        return 12 * self.timeout_seconds

    @classmethod
    def of(cls, settings: Any) -> EffectSettings:
        """From the service's Settings."""
        return cls(
            timeout_seconds=float(settings.effects_timeout_seconds),
            smtp_host=settings.smtp_host,
            smtp_port=settings.smtp_port,
            email_from=settings.effects_email_from,
        )


class FinalFailure(Exception):
    """Retrying this effect cannot succeed (a 4xx, a refused recipient)."""


Deliverer = Callable[[dict[str, Any], Delivery], None]


class EffectKinds:
    def __init__(self) -> None:
        self._kinds: dict[str, Deliverer] = {}

    def delivers(self, kind: str) -> Callable[[Deliverer], Deliverer]:
        def register(func: Deliverer) -> Deliverer:
            if kind in self._kinds and self._kinds[kind] is not func:
                raise ValueError(f"effect kind {kind!r} is already registered")
            self._kinds[kind] = func
            return func

        return register

    def get(self, kind: str) -> Deliverer:
        try:
            return self._kinds[kind]
        except KeyError:
            raise FinalFailure(f"no deliverer for effect kind {kind!r} in this release") from None

    def names(self) -> list[str]:
        return sorted(self._kinds)


# A 4xx that may pass: a timeout, a conflict with a request still in flight, too early, too many.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 409, 425, 429})


# The kinds a shop's own modules register, in every process that imports them.
effect_kinds = EffectKinds()


def kinds_with_builtins(
    settings: EffectSettings, custom: EffectKinds = effect_kinds
) -> EffectKinds:
    """The built-in kinds, configured, and the registered ones (which may not take their names)."""
    kinds = EffectKinds()
    kinds.delivers("http")(lambda payload, delivery: post_json(payload, delivery, settings))
    kinds.delivers("email")(lambda payload, delivery: send_email(payload, delivery, settings))
    for name in custom.names():
        kinds.delivers(name)(custom.get(name))
    return kinds


def post_json(payload: dict[str, Any], delivery: Delivery, settings: EffectSettings) -> None:
    headers = {**payload.get("headers", {}), "Idempotency-Key": delivery.idempotency_key}
    response = requests.post(
        payload["url"], json=payload["json"], headers=headers, timeout=settings.timeout_seconds
    )
    status = response.status_code
    if 200 <= status < 300:
        return
    message = f"POST answered {status}"
    if 400 <= status < 500 and status not in RETRYABLE_CLIENT_STATUSES:
        raise FinalFailure(message)
    raise ConnectionError(message)


def send_email(payload: dict[str, Any], delivery: Delivery, settings: EffectSettings) -> None:
    message = EmailMessage()
    message["From"] = settings.email_from
    message["To"] = payload["to"]
    message["Subject"] = payload["subject"]
    message["Date"] = formatdate(localtime=False)
    # The same on every delivery of this effect: what a mail system deduplicates by.
    message["Message-ID"] = f"<{delivery.idempotency_key}@payments>"
    message.set_content(payload["text"])
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.timeout_seconds
        ) as smtp:
            smtp.send_message(message)
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
        raise FinalFailure(f"the SMTP server refused it: {exc}") from exc
    except smtplib.SMTPResponseException as exc:
        if 500 <= exc.smtp_code < 600:
            raise FinalFailure(f"the SMTP server refused it: {exc.smtp_code}") from exc
        raise ConnectionError(f"the SMTP server answered {exc.smtp_code}") from exc
    except smtplib.SMTPException as exc:
        raise ConnectionError(f"SMTP: {exc}") from exc
