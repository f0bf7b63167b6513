"""Masking secrets and card numbers in any text we log, store or report.

Used by the log-record factory, Sentry's ``before_send`` and the error text kept on
dead-lettered runs, and by validation to refuse card numbers where they do not belong.
"""

from __future__ import annotations

import re

# API keys and webhook secrets. Stripe's own shapes first (sk_live_..., rk_test_..., whsec_...)
# wherever they appear, even glued to other text (a URL-encoded "=sk_live_..."); then any
# sk_/rk_ token long enough to be a key, at a word start.
_STRIPE_KEY = re.compile(r"((?:sk|rk)_(?:live|test)_|whsec_)[A-Za-z0-9_]+")
_OTHER_KEY = re.compile(r"\b((?:sk|rk)_)[A-Za-z0-9_]{16,}")
# A PaymentIntent's client secret: pi_..._secret_...
_CLIENT_SECRET = re.compile(r"(pi_[A-Za-z0-9]+)_secret_[A-Za-z0-9]+")
# Runs of 13 or more digits, optionally grouped by spaces or dashes, as card numbers are written.
_DIGIT_RUN = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,}(?!\d)")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def find_card_number(digits: str) -> str | None:
    """A Luhn-valid 13-19 digit stretch anywhere in a run of digits (a card followed by its
    expiry or CVC is one long run), or None."""
    for length in range(19, 12, -1):
        for start in range(0, len(digits) - length + 1):
            candidate = digits[start : start + length]
            if luhn_valid(candidate):
                return candidate
    return None


def _mask_card(match: re.Match[str]) -> str:
    card = find_card_number(re.sub(r"[ -]", "", match.group(0)))
    return f"[card ****{card[-4:]}]" if card else match.group(0)


def contains_card_number(text: str) -> bool:
    return any(_mask_card(match) != match.group(0) for match in _DIGIT_RUN.finditer(text))


def redact(text: str) -> str:
    text = _STRIPE_KEY.sub(lambda m: f"{m.group(1)}[redacted]", text)
    text = _OTHER_KEY.sub(lambda m: f"{m.group(1)}[redacted]", text)
    text = _CLIENT_SECRET.sub(lambda m: f"{m.group(1)}_secret_[redacted]", text)
    return _DIGIT_RUN.sub(_mask_card, text)
