"""Stripe's currency rules as validation applies them (shared.currencies, shared.validation):
what an amount counts in each currency, and the amounts Stripe refuses, refused first."""

from __future__ import annotations

import pytest

from shared.currencies import major_units
from shared.validation import ValidationError, validate_payment_request


def refusal(amount, currency: str) -> str:
    with pytest.raises(ValidationError) as refused:
        validate_payment_request({"amount": amount, "currency": currency})
    assert refused.value.field == "amount"
    return refused.value.message


def test_a_zero_decimal_currency_is_never_said_to_be_in_cents():
    assert "whole units of jpy" in refusal(10.5, "jpy")
    assert "cents" not in refusal(10.5, "jpy")
    assert "like cents" in refusal(10.5, "usd")


def test_isk_is_charged_in_whole_kronur_only():
    assert "multiple of 100" in refusal(12345, "isk")
    assert validate_payment_request({"amount": 12300, "currency": "isk"}).amount == 12300
    # ugx is zero-decimal: any whole amount is its own unit.
    assert validate_payment_request({"amount": 12345, "currency": "ugx"}).amount == 12345


def test_the_minimum_and_the_maximum():
    assert refusal(49, "usd") == "must be at least 50 for usd"
    assert refusal(29, "gbp") == "must be at least 30 for gbp"
    assert refusal(100_000_000, "jpy") == "must be at most 99999999"


def test_amounts_read_as_people_read_them():
    assert major_units(1000, "usd") == "10.00 USD"
    assert major_units(5, "eur") == "0.05 EUR"
    assert major_units(1500, "jpy") == "1500 JPY"
    assert major_units(1230, "kwd") == "1.230 KWD"
