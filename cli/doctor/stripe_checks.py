"""Checks of the configuration and of Stripe: keys and their mode, the webhook endpoint."""

from __future__ import annotations

import json
from collections.abc import Callable

import requests
import stripe

from cli.doctor.findings import DASHBOARD_KEYS, Finding, ok, problem, skipped
from shared.config import ConfigError, Settings

CONFIG_FIXES = {
    "STRIPE_SECRET_KEY": f"copy the secret key (sk_test_... in test mode) from {DASHBOARD_KEYS}",
    "STRIPE_PUBLISHABLE_KEY": f"copy the publishable key (pk_test_...) from {DASHBOARD_KEYS}",
    "STRIPE_WEBHOOK_SECRET": "use the whsec_... that `stripe listen` prints, or the signing "
    "secret `payments webhook register` printed",
    "PAYMENTS_ENCRYPTION_KEYS": "make one with `payments keys generate`",
}


def configuration(load: Callable[[], Settings]) -> tuple[Settings | None, Finding]:
    """Load the settings as every process does; a refusal is the first thing to fix."""
    try:
        settings = load()
    except ConfigError as exc:
        message = str(exc)
        fix = next(
            (hint for name, hint in CONFIG_FIXES.items() if message.startswith(name)),
            "set it in the environment (README, Configuration lists every variable)",
        )
        return None, problem("configuration", message, fix)
    return settings, ok("configuration", "every variable is present and well formed")


def _mode(key: str) -> str:
    # sk_test_..., rk_live_..., pk_test_...: the second part is the mode.
    parts = key.split("_")
    return parts[1] if len(parts) > 2 and parts[1] in ("test", "live") else "unknown"


def key_modes(settings: Settings) -> Finding:
    server_mode, browser_mode = (
        _mode(settings.stripe_secret_key),
        _mode(settings.stripe_publishable_key),
    )
    if server_mode != browser_mode:
        return problem(
            "key modes",
            f"STRIPE_SECRET_KEY is a {server_mode} mode key but STRIPE_PUBLISHABLE_KEY a "
            f"{browser_mode} mode key: browsers would pay in the other mode than our server sees",
            f"take both keys from the same mode in {DASHBOARD_KEYS} (the Test mode switch)",
        )
    if server_mode == "live" and settings.uses_stripe_stand_in:
        return problem(
            "key modes",
            f"a live key is being sent to the local stand-in at {settings.stripe_api_base}",
            "use test keys (sk_test_..., pk_test_...) with the stand-in; live keys belong to a "
            "production deployment only",
        )
    kind = "restricted" if settings.stripe_secret_key.startswith("rk_") else "secret"
    return ok("key modes", f"a {kind} key and a publishable key, both {server_mode} mode")


# --- Stripe -------------------------------------------------------------------------------------


def stripe_key(client: stripe.StripeClient, settings: Settings) -> Finding:
    """One harmless read tells whether Stripe takes the key at all."""
    where = settings.stripe_api_base or "Stripe"
    try:
        client.v1.payment_intents.list(params={"limit": 1})
    except stripe.AuthenticationError:
        return problem(
            "stripe key",
            f"{where} refused STRIPE_SECRET_KEY: mistyped, revoked, or of another account",
            f"copy the key again from {DASHBOARD_KEYS}",
        )
    except stripe.PermissionError:
        return problem(
            "stripe key",
            "the restricted key may not read PaymentIntents",
            "give the key PaymentIntents: write and Events: read (Dashboard > API keys)",
        )
    except stripe.APIConnectionError:
        return problem(
            "stripe key",
            f"{where} does not answer",
            "check the network; in dev start the stand-in (Procfile `stripe`) or unset "
            "STRIPE_API_BASE to use real Stripe",
        )
    except stripe.StripeError as exc:
        return problem(
            "stripe key",
            f"{where} answered HTTP {exc.http_status} to a PaymentIntents list",
            "check https://status.stripe.com, or the stand-in's log in dev",
        )
    return ok("stripe key", f"{where} accepts STRIPE_SECRET_KEY")


def _endpoints(client: stripe.StripeClient) -> list[dict[str, object]] | Finding:
    try:
        listed = client.v1.webhook_endpoints.list(params={"limit": 100})
    except stripe.PermissionError:
        return skipped(
            "webhook subscriptions",
            "the key may not read webhook endpoints, so their subscriptions were not checked",
            "give the restricted key Webhook Endpoints: read to check them",
        )
    except stripe.StripeError as exc:
        if exc.http_status == 404:
            # localstripe has no webhook endpoints API: `webhook register` configures it.
            return skipped(
                "webhook subscriptions",
                "this Stripe API (the stand-in) has no webhook endpoints to list; "
                "`payments webhook register` subscribes it to what our handlers need",
            )
        return skipped("webhook subscriptions", "not checked: Stripe did not answer the key")
    return [endpoint.to_dict() for endpoint in listed.data]


def webhook_subscriptions(client: stripe.StripeClient, needed: list[str]) -> Finding:
    """Every enabled endpoint at Stripe must send every event type a handler of ours needs."""
    endpoints = _endpoints(client)
    if isinstance(endpoints, Finding):
        return endpoints
    enabled = [e for e in endpoints if e.get("status") == "enabled"]
    if not enabled:
        return skipped(
            "webhook subscriptions",
            "no enabled webhook endpoint at Stripe: fine while `stripe listen` forwards events "
            "to your laptop, but a deployment receives nothing",
            "for a public URL run `payments webhook register --url https://your.host/webhook`",
        )
    gaps = _subscription_gaps(enabled, needed)
    if gaps:
        return problem(
            "webhook subscriptions",
            "; ".join(f"{url} is not subscribed to {', '.join(types)}" for url, types in gaps),
            "add those events to the endpoint (Dashboard > Developers > Webhooks > the "
            "endpoint > Update details), or register it again with `payments webhook register`",
        )
    return ok(
        "webhook subscriptions",
        f"{len(enabled)} enabled endpoint(s), each subscribed to all {len(needed)} event "
        "types our handlers need",
    )


def _subscription_gaps(
    endpoints: list[dict[str, object]], needed: list[str]
) -> list[tuple[str, list[str]]]:
    gaps = []
    for endpoint in endpoints:
        subscribed = endpoint.get("enabled_events") or []
        assert isinstance(subscribed, list)
        if "*" in subscribed:
            continue
        missing = [t for t in needed if t not in subscribed]
        if missing:
            gaps.append((str(endpoint.get("url")), missing))
    return gaps


# A body our receiver checks only after the signature, and refuses as "not an event": a correct
# signature is answered invalid_event, a wrong one signature_invalid, and nothing is ever queued.
PROBE_BODY = json.dumps({"object": "payments.doctor_probe"})


def webhook_secret(settings: Settings, web: str | None) -> Finding:
    """Whether our web process verifies signatures made with each configured secret.

    This proves our side only. Stripe never shows an endpoint's secret after creating it, so no
    call can compare it with STRIPE_WEBHOOK_SECRET; a mismatch shows as failed deliveries in the
    Dashboard (or as 400s in `stripe listen`'s output, whose secret is its own, not an
    endpoint's).
    """
    if not web:
        return skipped(
            "webhook secret", "not checked", "give --web http://127.0.0.1:8000 (our web process)"
        )
    url = web.rstrip("/") + "/webhook"
    for index, secret in enumerate(settings.stripe_webhook_secrets):
        header = stripe.WebhookSignature.generate_signature_header(PROBE_BODY, secret)
        try:
            answer = requests.post(
                url, data=PROBE_BODY, headers={"Stripe-Signature": header}, timeout=10
            )
        except requests.RequestException:
            return problem(
                "webhook secret",
                f"nothing answers at {url}",
                "start the web process (Procfile `web`), or pass its address with --web",
            )
        code = _error_code(answer)
        if code != "invalid_event":
            return problem(
                "webhook secret",
                f"{url} does not accept signatures made with STRIPE_WEBHOOK_SECRET "
                f"(secret #{index + 1}; it answered {answer.status_code} {code})",
                "give web the same STRIPE_WEBHOOK_SECRET as this environment and restart it",
            )
    return ok(
        "webhook secret",
        f"{url} verifies signatures made with the configured secret(s). Whether Stripe signs "
        "with the same secret only shows in deliveries: see the endpoint's attempts in the "
        "Dashboard, or `stripe listen`'s output",
    )


def _error_code(answer: requests.Response) -> str:
    try:
        return str(answer.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "no error code"
