"""Logging set-up shared by the web process, the workers and the CLI.

Every log record is redacted when it is created (card numbers, API keys, webhook secrets,
client secrets), whatever logger made it and whatever handler prints it: the Stripe SDK, for
one, logs whole API responses at DEBUG. Every record also carries the ids of what is being
worked on (request, task, event, PaymentIntent), from context variables set by the web and
worker entry points. Production writes one JSON object a line; dev writes readable lines.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared.observability.redaction import redact

CONTEXT_FIELDS = (
    "request_id", "task_id", "event_id", "payment_intent_id", "checkout_session", "operator",
)  # fmt: skip
_context: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(name, default=None) for name in CONTEXT_FIELDS
}
_installed = False


def bind(**ids: str | None) -> None:
    """Attach ids to every log record made from here on in this context (request or task)."""
    for name, value in ids.items():
        _context[name].set(value)


def current_ids() -> dict[str, str]:
    return {name: value for name, var in _context.items() if (value := var.get())}


def clear_context() -> None:
    for var in _context.values():
        var.set(None)


@contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    tokens = {name: _context[name].set(value) for name, value in ids.items()}
    try:
        yield
    finally:
        for name, token in tokens.items():
            _context[name].reset(token)


# The Stripe SDK's DEBUG lines that carry a whole request or response body: a PaymentIntent's
# billing details, receipt email and shipping address are customers' personal data, which no
# pattern masks reliably. The line stays (it says a call was made), its body does not.
_SDK_BODY_LINES = ("message='API response body'", "message='Post details'")


class WithoutSdkBodies(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        for line in _SDK_BODY_LINES:
            if line in text:
                record.msg, record.args = f"{line} body=(withheld: may hold personal data)", None
        return True


def install_redaction() -> None:
    """Make every LogRecord carry only redacted text and the context ids, and the Stripe SDK's
    lines no request or response body. Idempotent."""
    global _installed
    if _installed:
        return
    logging.getLogger("stripe").addFilter(WithoutSdkBodies())
    make_record = logging.getLogRecordFactory()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        redact_record(record)
        for name, var in _context.items():
            setattr(record, name, var.get())
        return record

    logging.setLogRecordFactory(redacting_factory)
    _installed = True


def redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string must not lose the record
        message = f"{record.msg!r} {record.args!r}"
    record.msg = redact(message)
    record.args = None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        # Formatters use exc_text when it is set; the traceback may quote secrets.
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(process)d]%(ids)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(
            f"{name}={getattr(record, name)}"
            for name in CONTEXT_FIELDS
            if getattr(record, name, None)
        )
        record.ids = f" [{ids}]" if ids else ""
        return super().format(record)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    install_redaction()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_payments", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler._payments = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # The Stripe SDK logs two INFO lines for every API call it makes (about a tenth of a
    # create-payment's own time, make bench); we log each call's outcome ourselves, and an
    # error with Stripe's request id. LOG_LEVEL=DEBUG lets the SDK's lines through again.
    sdk_level = logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    logging.getLogger("stripe").setLevel(sdk_level)
