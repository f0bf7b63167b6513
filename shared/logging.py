"""Logging set-up shared by the web process, the workers and the CLI.

Every log record is redacted when it is created (card numbers, API keys, webhook secrets,
client secrets), whatever logger made it and whatever handler prints it: the Stripe SDK, for
one, logs whole API responses at DEBUG.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

from shared.redaction import redact

_installed = False


def install_redaction() -> None:
    """Make every LogRecord carry only redacted text. Idempotent."""
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        redact_record(record)
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


def configure_logging(level: str = "INFO") -> None:
    install_redaction()
    root = logging.getLogger()
    if any(getattr(h, "_payments", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
    )
    handler._payments = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
