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
# A card number as people write it: 12 to 19 digits, either unbroken or in groups split by one
# separator (space, two spaces, dash, dot, slash or underscore). Not glued to other digits or to
# an identifier's underscore (``evt_4242...``), and not the fraction or integer part of a
# decimal number (``0.4242...`` is a duration, not a card). Glued to letters it still counts: a
# leaked card costs more than a mangled word. Bounded, so the scan is linear in the text.
_SEPARATOR = r"(?: {1,2}|[-./_])"
_CARD_CANDIDATE = re.compile(
    r"(?<![\d_])(?<!\d[.,])"  # not inside a number, an id's suffix or a decimal
    r"(\d{4}(?:" + _SEPARATOR + r"\d{1,6}){2,4}|\d{12,64})"
    r"(?![\d_])(?![.,]\d)"
)
# How each network prints its numbers when it groups them.
_GROUPINGS = {(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 4, 4, 4, 2), (4, 4, 4, 4, 1), (4, 4, 4, 3),
              (4, 6, 5), (4, 6, 4), (4, 4, 4, 2), (4, 4, 4, 1)}  # fmt: skip


def _network_lengths(digits: str) -> range | tuple[int, ...]:
    """The lengths a number starting like ``digits`` has on its card network; () if none."""
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return (16,)  # Mastercard
    if two in (34, 37):
        return (15,)  # American Express
    if digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649:
        return range(16, 20)  # Discover
    if 3528 <= four <= 3589:
        return range(16, 20)  # JCB
    if 300 <= int(digits[:3]) <= 305 or two in (36, 38, 39):
        return range(14, 20)  # Diners Club
    if two == 62:
        return range(16, 20)  # UnionPay
    if two == 50 or 56 <= two <= 69:
        return range(12, 20)  # Maestro
    return ()


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


def is_card_number(written: str) -> bool:
    """Whether ``written`` (digits, maybe grouped) is a real card number: a network's prefix
    and length, a Luhn check digit, and if grouped, grouped as cards are printed. An unbroken
    run longer than a card is one if it starts with one (a card glued to its expiry or CVC)."""
    groups = re.split(_SEPARATOR, written)
    digits = "".join(groups)
    if len(groups) > 1:
        if tuple(len(g) for g in groups) not in _GROUPINGS:
            return False
        return len(digits) in _network_lengths(digits) and luhn_valid(digits)
    return any(
        luhn_valid(digits[:length]) for length in _network_lengths(digits) if length <= len(digits)
    )


def _mask_card(match: re.Match[str]) -> str:
    written = match.group(1)
    if not is_card_number(written):
        return match.group(0)
    digits = re.sub(r"[^0-9]", "", written)
    # The card's own last four, even when its expiry or CVC is glued on after it.
    card = next(
        (digits[:n] for n in sorted(_network_lengths(digits), reverse=True)
         if n <= len(digits) and luhn_valid(digits[:n])),
        digits,
    )  # fmt: skip
    return f"[card ****{card[-4:]}]"


def contains_card_number(text: str) -> bool:
    return any(is_card_number(m.group(1)) for m in _CARD_CANDIDATE.finditer(text))


# PostgreSQL's own error detail quotes the row or key values that failed ("Failing row contains
# (...)", "Key (...)=(...)"); SQLAlchemy's hide_parameters cannot reach it.
_PG_DETAIL = re.compile(r"^DETAIL:.*$", re.MULTILINE)


def redact(text: str) -> str:
    text = _PG_DETAIL.sub("DETAIL:  [values hidden]", text)
    text = _STRIPE_KEY.sub(lambda m: f"{m.group(1)}[redacted]", text)
    text = _OTHER_KEY.sub(lambda m: f"{m.group(1)}[redacted]", text)
    text = _CLIENT_SECRET.sub(lambda m: f"{m.group(1)}_secret_[redacted]", text)
    return _CARD_CANDIDATE.sub(_mask_card, text)
