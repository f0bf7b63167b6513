"""One Stripe API version, chosen in the settings, sent as Stripe-Version on every call the
service makes: checked on the wire, at an HTTP endpoint standing in for Stripe."""

from __future__ import annotations

from dataclasses import replace

import pytest
import stripe

from devtools.receivers import http_receiver
from shared.config import ConfigError, Settings, load_settings
from shared.infra.stripe_gateway import make_stripe_client

BASE_ENV = {
    "STRIPE_SECRET_KEY": "sk_test_" + "x" * 24,
    "STRIPE_PUBLISHABLE_KEY": "pk_test_" + "x" * 24,
    "STRIPE_WEBHOOK_SECRET": "whsec_test",
    "STRIPE_API_BASE": "http://127.0.0.1:9",
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/x",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "PAYMENTS_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWtleS1vbmUtbm90LXNlY3JldC0zMmI=",
}


def _version_sent(settings: Settings) -> str:
    with http_receiver() as (url, posts):
        client = make_stripe_client(replace(settings, stripe_api_base=url))
        with pytest.raises(stripe.StripeError):
            # The endpoint answers an empty 200, which the SDK cannot read: the request is sent.
            client.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})
        return str(posts.all()[0].headers["Stripe-Version"])


def test_every_call_carries_the_configured_version():
    settings = load_settings({**BASE_ENV, "STRIPE_API_VERSION": "2025-10-29.clover"})
    assert _version_sent(settings) == "2025-10-29.clover"


def test_unset_the_version_is_the_locked_sdks():
    settings = load_settings(BASE_ENV)
    assert settings.stripe_api_version == "2026-10-28.endive"
    assert _version_sent(settings) == "2026-10-28.endive"


def test_a_version_that_is_not_one_is_refused_at_start():
    with pytest.raises(ConfigError, match="STRIPE_API_VERSION"):
        load_settings({**BASE_ENV, "STRIPE_API_VERSION": "latest"})
