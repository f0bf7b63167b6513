"""Configuration comes from the environment only, and bad values stop start-up clearly."""

from __future__ import annotations

import os
import subprocess

import pytest

from devtools.processes import REPO_ROOT, run_payments, venv_script
from shared.config import PUBLIC_DEV_VALUES, ConfigError, load_settings

VALID = {
    "STRIPE_SECRET_KEY": "sk_test_abc",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_abc",
    "STRIPE_WEBHOOK_SECRET": "whsec_one",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/payments",
    "PAYMENTS_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWtleS1vbmUtbm90LXNlY3JldC0zMmI=",
}


def test_valid_environment_loads():
    settings = load_settings(VALID)
    assert settings.stripe_webhook_secrets == ("whsec_one",)
    assert settings.stripe_api_base is None
    assert settings.sentry_dsn is None
    # psycopg2 is the driver we ship; SQLAlchemy 2.1 would pick psycopg 3 for a bare URL.
    assert settings.database_url.startswith("postgresql+psycopg2://")


def test_several_webhook_secrets_while_rolling():
    settings = load_settings({**VALID, "STRIPE_WEBHOOK_SECRET": "whsec_new, whsec_old"})
    assert settings.stripe_webhook_secrets == ("whsec_new", "whsec_old")


def test_restricted_key_is_accepted():
    assert (
        load_settings({**VALID, "STRIPE_SECRET_KEY": "rk_test_abc"}).stripe_secret_key
        == "rk_test_abc"
    )


def test_secrets_stay_out_of_repr():
    text = repr(load_settings({**VALID, "ADMIN_TOKEN": "admin-token-that-is-long-enough"}))
    assert "admin-token-that" not in text
    assert "dGVzdC1vbmx5" not in text
    assert "sk_test_abc" not in text
    assert "whsec_one" not in text


@pytest.mark.parametrize("name", sorted(VALID))
def test_missing_required_variable_is_named(name):
    env = {k: v for k, v in VALID.items() if k != name}
    with pytest.raises(ConfigError, match=name):
        load_settings(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STRIPE_SECRET_KEY", "pk_test_abc"),
        ("STRIPE_SECRET_KEY", "nonsense"),
        ("STRIPE_PUBLISHABLE_KEY", "sk_test_abc"),
        ("STRIPE_WEBHOOK_SECRET", "not_a_secret"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_ok,bad"),
        ("REDIS_URL", "localhost:6379"),
        ("DATABASE_URL", "mysql://x@y/z"),
        ("STRIPE_API_BASE", "localhost:8420"),
        ("HANDLER_MAX_ATTEMPTS", "zero"),
        ("HANDLER_MAX_ATTEMPTS", "0"),
        ("LOG_LEVEL", "LOUD"),
        ("PAYMENTS_ENCRYPTION_KEYS", "not-a-fernet-key"),
        ("ADMIN_TOKEN", "short"),
    ],
)
def test_malformed_variable_is_named(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({**VALID, name: value})


def test_publishable_key_as_secret_key_says_so():
    with pytest.raises(ConfigError, match="publishable"):
        load_settings({**VALID, "STRIPE_SECRET_KEY": "pk_live_abc"})


def test_cli_stops_with_one_line_naming_the_variable():
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_", "REDIS_"))
    }
    env.update({k: v for k, v in VALID.items() if k != "DATABASE_URL"})

    result = run_payments("db", "upgrade", env=env, timeout=60)

    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["Error: configuration error: DATABASE_URL is not set"]


def test_web_process_stops_with_one_line_naming_the_variable():
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_", "REDIS_"))
    }
    env.update({k: v for k, v in VALID.items() if k != "STRIPE_SECRET_KEY"})

    result = subprocess.run(
        [venv_script("python"), "-c", "import api.wsgi"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 4  # gunicorn's "app failed to load": the master stops
    assert result.stderr.strip() == "configuration error: STRIPE_SECRET_KEY is not set"


def test_webhook_secrets_may_name_their_endpoints(base_env):
    env = {**base_env, "STRIPE_WEBHOOK_SECRET": "v2025=whsec_old,whsec_rolling,v2026=whsec_new"}
    settings = load_settings(env)
    assert settings.stripe_webhook_secrets == ("whsec_old", "whsec_rolling", "whsec_new")
    assert settings.stripe_webhook_endpoints == ("v2025", "1", "v2026")
    for bad in ("Bad Name=whsec_x", "v1=sk_test_x", "v1="):
        with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET"):
            load_settings({**base_env, "STRIPE_WEBHOOK_SECRET": bad})


def test_nothing_but_config_reads_the_environment():
    readers = []
    for path in REPO_ROOT.glob("*/**/*.py"):
        relative = path.relative_to(REPO_ROOT)
        if relative.parts[0] not in ("api", "workers", "shared", "cli"):
            continue
        if "os.environ" in path.read_text() or "getenv" in path.read_text():
            readers.append(str(relative))
    assert readers == ["shared/config/loading.py"]


def _dev_env() -> dict[str, str]:
    """.env.dev exactly as the repository ships it."""
    env = {}
    for line in (REPO_ROOT / ".env.dev").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    return env


def test_env_dev_loads_against_the_stand_in():
    settings = load_settings(_dev_env())
    assert settings.uses_stripe_stand_in


def test_env_dev_values_are_refused_when_aimed_at_real_stripe():
    env = {k: v for k, v in _dev_env().items() if k != "STRIPE_API_BASE"}
    with pytest.raises(ConfigError, match="public development value"):
        load_settings(env)


@pytest.mark.parametrize(
    ("name", "live"),
    [
        ("STRIPE_SECRET_KEY", "sk_live_" + "x" * 24),
        ("STRIPE_SECRET_KEY", "rk_live_" + "x" * 24),
        ("STRIPE_PUBLISHABLE_KEY", "pk_live_" + "x" * 24),
    ],
)
def test_env_dev_values_are_refused_beside_a_live_key_whatever_the_base(name, live):
    """A stand-in base does not make the public dev values safe once a live key is set: that
    service is about to move real money, whatever STRIPE_API_BASE says."""
    env = {**_dev_env(), name: live}
    assert env["STRIPE_API_BASE"]
    with pytest.raises(ConfigError, match="public development value"):
        load_settings(env)


@pytest.mark.parametrize(
    "name",
    ["STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "PAYMENTS_ENCRYPTION_KEYS", "ADMIN_TOKEN"],
)
def test_one_forgotten_variable_left_at_its_dev_value_stops_start_up(name):
    real = {**VALID, "ADMIN_TOKEN": "a-real-admin-token-of-enough-length"}
    real.pop("STRIPE_API_BASE", None)
    with pytest.raises(ConfigError, match=name):
        load_settings({**real, name: _dev_env()[name]})


def test_every_secret_in_env_dev_is_known_as_public():
    secrets = {
        name: value
        for name, value in _dev_env().items()
        if any(word in name for word in ("KEY", "SECRET", "TOKEN"))
    }
    assert secrets and set(secrets.values()) <= PUBLIC_DEV_VALUES


def test_a_client_may_hold_several_api_keys_while_it_rotates():
    old, new = "shop-old-token-" + "o" * 16, "shop-new-token-" + "n" * 16
    settings = load_settings({**VALID, "API_CLIENT_KEYS": f"shop:{old}, shop:{new}"})
    assert settings.api_clients == (("shop", old), ("shop", new))


def test_one_api_key_for_two_clients_is_refused():
    """Which client would it be? Its payments and idempotency keys belong to one."""
    token = "shared-token-" + "s" * 16
    with pytest.raises(ConfigError, match="API_CLIENT_KEYS gives each token once"):
        load_settings({**VALID, "API_CLIENT_KEYS": f"shop:{token},other:{token}"})


def test_stripe_js_is_fetched_over_https_outside_dev():
    """The checkout page runs it beside the card fields: over http it could be swapped."""
    with pytest.raises(ConfigError, match="STRIPE_JS_URL must be a URL starting with https://"):
        load_settings({**VALID, "STRIPE_JS_URL": "http://js.example.test/v3/"})
    served = {**VALID, "STRIPE_JS_URL": "https://js.example.test/v3/"}
    assert load_settings(served).stripe_js_url == "https://js.example.test/v3/"
    # The stand-in serves its double over plain http on this machine.
    dev = {
        **VALID,
        "STRIPE_API_BASE": "http://127.0.0.1:8420",
        "STRIPE_JS_URL": "http://127.0.0.1:8420/x.js",
    }
    assert load_settings(dev).stripe_js_url == "http://127.0.0.1:8420/x.js"


def test_the_demo_page_is_refused_anywhere_but_the_stand_in():
    """On the demo page the browser chooses the amount: never where real money moves."""
    assert load_settings(_dev_env()).checkout_demo is True
    assert load_settings(VALID).checkout_demo is False
    stand_in = {**VALID, "STRIPE_API_BASE": "http://127.0.0.1:8420", "CHECKOUT_DEMO": "true"}
    assert load_settings(stand_in).checkout_demo is True
    aimed_at_stripe = {**VALID, "CHECKOUT_DEMO": "true"}
    beside_a_live_key = {**stand_in, "STRIPE_SECRET_KEY": "sk_live_" + "x" * 24}
    for env in (aimed_at_stripe, beside_a_live_key):
        with pytest.raises(ConfigError, match="CHECKOUT_DEMO"):
            load_settings(env)
    with pytest.raises(ConfigError, match="CHECKOUT_DEMO must be true or false"):
        load_settings({**stand_in, "CHECKOUT_DEMO": "yes"})


def test_named_operator_tokens_with_scopes():
    reader, old, new = ("r" * 24, "o" * 24, "n" * 24)
    env = {
        **VALID,
        "ADMIN_TOKENS": f"ann:read:{reader}, bob:read+refund:{old}, bob:read+refund:{new}",
    }
    operators = {(op.name, op.token): op.scopes for op in load_settings(env).operators}
    assert operators == {
        ("ann", reader): {"read"},
        ("bob", old): {"read", "refund"},
        ("bob", new): {"read", "refund"},
    }
    # ADMIN_TOKEN is the operator "admin" with every scope.
    legacy = load_settings({**VALID, "ADMIN_TOKEN": "l" * 24}).operators
    assert [(op.name, op.scopes) for op in legacy] == [("admin", {"read", "replay", "refund"})]
    assert "o" * 24 not in repr(load_settings(env))


@pytest.mark.parametrize(
    "value",
    [
        "ann:read:short",
        "ann:write:" + "t" * 24,
        "ann" + "t" * 24,
        "a n:read:" + "t" * 24,
        f"ann:read:{'t' * 24},bob:refund:{'t' * 24}",
    ],
)
def test_a_malformed_operator_token_stops_start_up(value):
    with pytest.raises(ConfigError, match="ADMIN_TOKENS"):
        load_settings({**VALID, "ADMIN_TOKENS": value})


def test_worker_metrics_off_loopback_need_the_metrics_token():
    every_interface = "0.0.0.0"  # noqa: S104 (the value under test, never bound here)
    exposed = {**VALID, "WORKER_METRICS_PORT": "9808", "WORKER_METRICS_HOST": every_interface}
    with pytest.raises(ConfigError, match="METRICS_TOKEN"):
        load_settings(exposed)
    token = {**exposed, "METRICS_TOKEN": "m" * 24}
    assert load_settings(token).worker_metrics_host == every_interface
    # On loopback (the default) only this host can reach them.
    assert load_settings({**VALID, "WORKER_METRICS_PORT": "9808"}).worker_metrics_port == 9808
