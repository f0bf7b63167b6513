"""The example shop (examples/shop) on the real stack: installed beside the service for the
stack's processes only, its branch migrated by `payments db upgrade`, a payment's event through
the web process, the ledger's worker, the relay's worker (killed mid-send) and beat, to an
SMTP server: one order paid, one receipt; then a dispute to the shop's own HTTP endpoint, once.

The relay's worker is SIGKILLed while it holds the receipt: connected to the SMTP server,
which has not said a word yet. The effect is committed and not sent; once the lease ends a new
relay sends it, with the same Message-ID, and the server holds exactly one receipt.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import create_engine, text

from devtools import stripe_events
from devtools.processes import (
    REPO_ROOT,
    Process,
    celery_worker_args,
    free_port,
    port_open,
    procfile_command,
    venv_script,
    wait_until,
)
from devtools.receivers import SmtpSink, holding_smtp_sink, http_receiver
from tests.conftest import POSTGRES, REDIS_HOST, WEBHOOK_SECRET

PSYCOPG2 = POSTGRES.replace("postgresql://", "postgresql+psycopg2://")
# A broker database of this module's own: the session worker never takes these events.
OWN_REDIS_DB = 8
# Each network wait of a delivery; a relay holds an effect 12 times this (its lease).
EFFECTS_TIMEOUT_SECONDS = 2


def _install_shop(into: Path) -> Path:
    """The example installed (never resolved: --no-deps) into a directory only the stack's
    processes have on their path: the test process and the session's never see its handlers."""
    source = into / "source"
    shutil.copytree(REPO_ROOT / "examples" / "shop", source, ignore=shutil.ignore_patterns("build"))
    site = into / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(site), str(source)], check=True, capture_output=True)
    return site


@contextlib.contextmanager
def shop_stack(
    base_env: dict[str, str], sink: SmtpSink, disputes_url: str
) -> Iterator[dict[str, str]]:
    workdir = Path(tempfile.mkdtemp(prefix="payments-shop-"))
    database = f"payments_shop_{os.getpid()}"
    env = {
        **os.environ,
        **{k: v for k, v in base_env.items() if k not in ("HANDLER_MODULES", "BROKER_URL")},
        "PYTHONPATH": f"{_install_shop(workdir)}{os.pathsep}{REPO_ROOT}",
        "DATABASE_URL": f"{POSTGRES}/{database}",
        "REDIS_URL": f"{REDIS_HOST}/{OWN_REDIS_DB}",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(sink.port),
        "SHOP_DISPUTE_WEBHOOK_URL": disputes_url,
        "EFFECTS_TIMEOUT_SECONDS": str(EFFECTS_TIMEOUT_SECONDS),
        "EFFECTS_RELAY_INTERVAL_SECONDS": "1",
        "RECONCILE_INTERVAL_SECONDS": "3600",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
    }
    (workdir / "metrics").mkdir()
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        stack.callback(_drop, database)
        upgrade = subprocess.run(
            [venv_script("payments"), "db", "upgrade"], env=env, capture_output=True, text=True
        )
        assert upgrade.returncode == 0, upgrade.stderr
        yield env


def _drop(database: str) -> None:
    admin = create_engine(f"{PSYCOPG2}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    admin.dispose()


def _start(name: str, args: list[str], env: dict[str, str], ready: str) -> Process:
    process = Process(f"shop-{name}", args, env)
    wait_until(lambda: ready in process.output() or not process.alive(), 60, f"shop {name}")
    assert process.alive(), process.output()[-3000:]
    return process


@pytest.mark.long
def test_one_payment_one_receipt_even_with_the_relay_killed_mid_send(base_env):
    with (
        holding_smtp_sink() as sink,
        http_receiver() as (shop_webhook, posts),
        shop_stack(base_env, sink, f"{shop_webhook}/disputes") as env,
    ):
        engine = create_engine(
            env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://")
        )
        intent_id = stripe_events.new_id("pi")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO shop_orders (payment_intent_id, amount, currency, email) "
                    "VALUES (:pi, 2500, 'eur', 'ada@example.com')"
                ),
                {"pi": intent_id},
            )
        port = free_port()
        processes = contextlib.ExitStack()
        with processes:
            web = Process("shop-web", procfile_command("web", port), env)
            processes.callback(web.stop)
            worker = _start(
                "worker", celery_worker_args("shop-ledger@%h", concurrency=2), env, " ready."
            )
            processes.callback(worker.stop)
            relay_args = celery_worker_args("shop-relay@%h", concurrency=1, queues="effects")
            relay = _start("relay-1", relay_args, env, " ready.")
            processes.callback(relay.stop)
            schedule = str(Path(env["PROMETHEUS_MULTIPROC_DIR"]).parent / "celerybeat-schedule")
            beat = Process(
                "shop-beat",
                [venv_script("celery"), "-A", "workers.celery_app", "beat", "-s", schedule],
                env,
            )
            processes.callback(beat.stop)
            wait_until(lambda: port_open(port), 60, "shop web")

            # The SMTP server hangs: the relay that takes the receipt is stuck in its send.
            sink.greet.clear()
            event = stripe_events.event(
                "payment_intent.succeeded",
                stripe_events.payment_intent(
                    intent_id=intent_id, status="succeeded", amount=2500, currency="eur"
                )
                | {"amount_received": 2500},
            )
            body, headers = stripe_events.signed(event, WEBHOOK_SECRET)
            for _ in range(2):  # Stripe may send it twice
                posted = requests.post(
                    f"http://127.0.0.1:{port}/webhook", data=body, headers=headers, timeout=10
                )
                assert posted.status_code == 200
            wait_until(
                lambda: sink.connections.all() != [], 60, "the relay connecting", interval=0.05
            )
            relay.kill_group()
            # Killed holding it: the attempt counted, no outcome noted, nothing sent.
            with engine.connect() as conn:
                held = conn.execute(text("SELECT attempts, last_error FROM outbox_effects")).one()
            assert (held.attempts, held.last_error) == (1, None)
            sink.greet.set()
            relay = _start("relay-2", relay_args, env, " ready.")
            processes.callback(relay.stop)

            # The lease of the killed relay ends, a new relay sends the receipt: one, however
            # often the event came.
            wait_until(
                lambda: len(sink.received.all()) >= 1,
                12 * EFFECTS_TIMEOUT_SECONDS + 60,
                "the receipt",
            )
            with engine.connect() as conn:
                status = conn.execute(
                    text("SELECT status FROM shop_orders WHERE payment_intent_id = :pi"),
                    {"pi": intent_id},
                ).scalar_one()
                effect = conn.execute(
                    text("SELECT status, attempts, idempotency_key FROM outbox_effects")
                ).one()
            engine.dispose()
            (receipt,) = sink.received.all()
            assert status == "paid"
            assert receipt["To"] == "ada@example.com" and "2500 EUR" in receipt.get_content()
            assert effect.status == "done" and effect.attempts == 2
            assert receipt["Message-ID"] == f"<{effect.idempotency_key}@payments>"

            # A dispute, sent twice: the shop's own webhook hears of it once, with its key.
            dispute = stripe_events.resource("dispute") | {
                "id": stripe_events.new_id("dp"),
                "charge": stripe_events.new_id("ch"),
                "amount": 2500,
            }
            body, headers = stripe_events.signed(
                stripe_events.event("charge.dispute.created", dispute), WEBHOOK_SECRET
            )
            for _ in range(2):
                posted = requests.post(
                    f"http://127.0.0.1:{port}/webhook", data=body, headers=headers, timeout=10
                )
                assert posted.status_code == 200
            wait_until(lambda: posts.all() != [], 60, "the shop's webhook hearing of the dispute")
            with engine.connect() as conn:
                key = conn.execute(
                    text("SELECT idempotency_key FROM outbox_effects WHERE name = 'dispute-alert'")
                ).scalar_one()
            (alert,) = posts.all()
            assert alert.path == "/disputes" and alert.body["dispute"] == dispute["id"]
            assert alert.headers["Idempotency-Key"] == key
