"""Masking secrets and card numbers in any text we log, store or report.

Used by the log filter, Sentry's ``before_send`` and the error text kept on dead-lettered runs.
"""

from __future__ import annotations

import re

# API keys and webhook secrets: sk_live_..., rk_test_..., whsec_...
_KEY = re.compile(r"\b((?:sk|rk)_(?:live|test)_|whsec_)[A-Za-z0-9]{4,}")
# A PaymentIntent's client secret: pi_..._secret_...
_CLIENT_SECRET = re.compile(r"\b(pi_[A-Za-z0-9]+)_secret_[A-Za-z0-9]+")
# 13 to 19 digits, optionally grouped by spaces or dashes, as card numbers are written.
_DIGIT_RUN = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    if 13 <= len(digits) <= 19 and _luhn_valid(digits):
        return f"[card ****{digits[-4:]}]"
    return match.group(0)


def redact(text: str) -> str:
    text = _KEY.sub(lambda m: f"{m.group(1)}[redacted]", text)
    text = _CLIENT_SECRET.sub(lambda m: f"{m.group(1)}_secret_[redacted]", text)
    return _DIGIT_RUN.sub(_mask_card, text)
