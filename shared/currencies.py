"""How Stripe counts each currency: the minor unit an amount is in, and how a person reads it."""

from __future__ import annotations

# Stripe's zero-decimal currencies: an amount is in whole units (1000 jpy is ¥1,000).
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
# Stripe's three-decimal currencies: an amount is in thousandths.
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())
# Currencies Stripe counts in hundredths but charges in whole units only: an amount must be a
# multiple of this (ISK since 2023: "invalid_charge_amount_no_decimal_compatible").
WHOLE_UNITS_ONLY = {"isk": 100}


def decimals(currency: str) -> int:
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2


def smallest_unit(currency: str) -> str:
    """What an amount in ``currency`` counts, said for an error message."""
    places = decimals(currency)
    if places == 0:
        return f"whole units of {currency} (1000 is 1000 {currency.upper()})"
    if places == 3:
        return f"thousandths of {currency} (1000 is 1.000 {currency.upper()})"
    return f"hundredths of {currency}, like cents (1000 is 10.00 {currency.upper()})"


def major_units(amount: int, currency: str) -> str:
    """``amount`` (minor units) as a person reads it: "10.00 USD", "1000 JPY". Exact: integer
    arithmetic only."""
    places = decimals(currency)
    code = currency.upper()
    if places == 0:
        return f"{amount} {code}"
    whole, fraction = divmod(amount, 10**places)
    return f"{whole}.{fraction:0{places}d} {code}"
