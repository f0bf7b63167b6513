"""The chaos suite's load: payments, signed Stripe-shaped events and poison, with retries."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import requests
import stripe

from bench.chaos.handlers import POISON_EVENT
from bench.chaos.stack import CHAOS_API_CLIENT_KEY, WEBHOOK_SECRET, Stack, log
from devtools import stripe_events
from devtools.standin import StandIn
from shared.config import load_settings

# The share of real payments whose payment_intent.succeeded is also sent thin.
THIN_TWIN_SHARE = 0.25


@dataclass
class Ledger:
    """What the load generator did, from its side."""

    accepted: set[str] = field(default_factory=set)
    # Thin twins sent of the stand-in's own snapshot events (one event each for the ledger).
    thin_twins: int = 0
    deliveries_2xx: int = 0
    deliveries_refused: int = 0
    # Refusals by HTTP status (0: no answer within the client's timeout).
    refusals: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted_log: Any = None

    def record(self, event_id: str, status: int) -> None:
        with self.lock:
            if 200 <= status < 300:
                self.deliveries_2xx += 1
                if event_id not in self.accepted:
                    self.accepted.add(event_id)
                    self.accepted_log.write(event_id + "\n")
                    self.accepted_log.flush()
            else:
                self.deliveries_refused += 1
                self.refusals[status] += 1


class LoadGenerator:
    """Sends the load through the receiver, spread over the fault schedule."""

    def __init__(self, stack: Stack, ledger: Ledger, args: argparse.Namespace) -> None:
        self.stack = stack
        self.ledger = ledger
        self.args = args
        self.api = f"http://127.0.0.1:{stack.web_port}"
        self.standin = StandIn(load_settings(stack.env))
        self.retry_queue: list[tuple[float, dict[str, Any]]] = []
        self.retry_lock = threading.Lock()
        self.payment_ids: list[str] = []
        self.synthetic_intents: list[str] = []
        # What each synthetic dispute and refund must end as.
        self.disputes: dict[str, str] = {}
        self.refunds: list[str] = []
        self.rng = random.Random(args.seed)

    def deliver(self, event: dict[str, Any]) -> None:
        """Sign and post one event as Stripe does; a refusal goes back for a later retry."""
        body = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
        try:
            status = requests.post(
                f"{self.api}/webhook",
                data=body,
                headers={"Stripe-Signature": header, "Content-Type": "application/json"},
                timeout=10,
            ).status_code
        except requests.RequestException:
            status = 0
        # A thin twin is its snapshot event's delivery, as the ledger records it.
        self.ledger.record(event.get("snapshot_event") or event["id"], status)
        if not 200 <= status < 300:
            with self.retry_lock:
                self.retry_queue.append((time.monotonic() + 2, event))

    def inject(self, event_type: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
        response = requests.post(
            f"{self.stack.env['STRIPE_API_BASE']}/_config/chaos/events",
            json={"type": event_type, "object": obj, "created": created},
            timeout=10,
        )
        response.raise_for_status()
        event: dict[str, Any] = response.json()
        return event

    def real_payment(self, index: int) -> None:
        """A PaymentIntent created through our API and confirmed at the stand-in, whose
        webhook the stand-in posts to our receiver (and never retries)."""
        for _ in range(60):
            try:
                response = requests.post(
                    f"{self.api}/api/create-payment",
                    json={"amount": 1000 + index, "currency": "usd"},
                    headers={
                        "Idempotency-Key": f"chaos-{self.args.seed}-{index}",
                        "Authorization": f"Bearer {CHAOS_API_CLIENT_KEY}",
                    },
                    timeout=30,
                )
                if response.status_code == 200:
                    intent_id = response.json()["paymentIntentId"]
                    self.standin.pay(intent_id, "4242424242424242")
                    self.payment_ids.append(intent_id)
                    if self.rng.random() < THIN_TWIN_SHARE:
                        self.thin_twin(intent_id)
                    return
            except requests.RequestException:
                pass
            time.sleep(1)  # the database may be down: a client retries with the same key
        log(f"gave up creating payment {index}")

    def thin_twin(self, intent_id: str) -> None:
        """The thin twin of the stand-in's payment_intent.succeeded, as Stripe sends both while
        an endpoint migrates to thin events: the worker fetches the PaymentIntent, and the
        ledger must apply the pair once, whichever arrives first."""
        since = int(time.time()) - 60
        for _ in range(20):
            snapshots = [
                event
                for event in self.standin.events(since=since)
                if event["type"] == "payment_intent.succeeded"
                and event["data"]["object"].get("id") == intent_id
            ]
            if snapshots:
                break
            time.sleep(0.5)
        else:
            return
        snapshot = snapshots[0]
        created = dt.datetime.fromtimestamp(snapshot["created"], dt.UTC)
        with self.ledger.lock:
            self.ledger.thin_twins += 1
        self.deliver(
            {
                "id": stripe_events.new_id("evt"),
                "object": "v2.core.event",
                "type": "v1.payment_intent.succeeded",
                "created": created.isoformat().replace("+00:00", "Z"),
                "livemode": False,
                "related_object": {
                    "id": intent_id,
                    "type": "payment_intent",
                    "url": f"/v1/payment_intents/{intent_id}",
                },
                "snapshot_event": snapshot["id"],
            }
        )

    def synthetic_pair(self, index: int) -> None:
        """processing then succeeded for one PaymentIntent, possibly swapped or duplicated."""
        intent_id = f"pi_chaos{self.args.seed}x{index:05d}"
        self.synthetic_intents.append(intent_id)
        now = int(time.time())
        # One pair in five shares its second: the tie rule decides (Stripe does not know these
        # PaymentIntents, so the lifecycle rank does).
        tie_or_next = 0 if self.rng.random() < 0.2 else 1
        pair = [
            self.inject(
                f"payment_intent.{status}",
                stripe_events.payment_intent(
                    intent_id=intent_id, status=status, amount=500 + index, created=now
                ),
                created=now + offset,
            )
            for offset, status in ((0, "processing"), (tie_or_next, "succeeded"))
        ]
        if self.rng.random() < 0.10:
            pair.reverse()
        for event in pair:
            self.deliver(event)
            if self.rng.random() < 0.10:
                self.deliver(event)  # Stripe delivers at least once: sometimes twice

    def aftercare(self, index: int) -> None:
        """A paid PaymentIntent's dispute (won or lost: created, funds withdrawn, under review,
        closed, funds reinstated when won) and a refund (pending, then succeeded), its events
        shuffled and some delivered twice: every order must end in the last state."""
        intent_id = f"pi_chaos{self.args.seed}d{index:05d}"
        dispute_id = f"dp_chaos{self.args.seed}x{index:05d}"
        refund_id = f"re_chaos{self.args.seed}x{index:05d}"
        outcome = "won" if index % 2 == 0 else "lost"
        self.disputes[dispute_id] = outcome
        self.refunds.append(refund_id)
        now = int(time.time())
        steps = [
            ("charge.dispute.created", "needs_response"),
            ("charge.dispute.funds_withdrawn", "needs_response"),
            ("charge.dispute.updated", "under_review"),
            ("charge.dispute.closed", outcome),
        ] + ([("charge.dispute.funds_reinstated", "won")] if outcome == "won" else [])
        events = [
            self.inject(kind, _dispute(dispute_id, intent_id, status, now), now + n)
            for n, (kind, status) in enumerate(steps)
        ] + [
            self.inject(kind, _refund(refund_id, intent_id, status, now), now + n)
            for n, (kind, status) in enumerate(
                (("refund.created", "pending"), ("refund.updated", "succeeded"))
            )
        ]
        self.rng.shuffle(events)
        for event in events:
            self.deliver(event)
            if self.rng.random() < 0.10:
                self.deliver(event)

    def poison_event(self, index: int) -> None:
        event = self.inject(
            POISON_EVENT, {"id": f"obj_poison{index}", "object": "chaos"}, int(time.time())
        )
        self.deliver(event)

    def drain_retries(self, until: float) -> None:
        while time.monotonic() < until:
            with self.retry_lock:
                due = [e for t, e in self.retry_queue if t <= time.monotonic()]
                self.retry_queue = [(t, e) for t, e in self.retry_queue if t > time.monotonic()]
                pending = len(self.retry_queue)
            for event in due:
                self.deliver(event)
            if not due and not pending:
                return
            time.sleep(0.5)

    def run(self, duration: float) -> None:
        jobs: list[Callable[[], None]] = []
        jobs += [partial(self.real_payment, i) for i in range(self.args.payments)]
        jobs += [partial(self.synthetic_pair, i) for i in range(self.args.pairs)]
        jobs += [partial(self.poison_event, i) for i in range(self.args.poison)]
        jobs += [partial(self.aftercare, i) for i in range(self.args.disputes)]
        self.rng.shuffle(jobs)
        interval = duration / len(jobs)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = []
            for n, job in enumerate(jobs):
                # Spread the load over the whole fault schedule.
                delay = started + n * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(job))
                if n % 200 == 0:
                    with self.retry_lock:
                        due = [e for t, e in self.retry_queue if t <= time.monotonic()]
                        self.retry_queue = [
                            (t, e) for t, e in self.retry_queue if t > time.monotonic()
                        ]
                    for event in due:
                        pool.submit(self.deliver, event)
            for future in futures:
                future.result()
        self.drain_retries(time.monotonic() + 120)


def _dispute(dispute_id: str, intent_id: str, status: str, created: int) -> dict[str, Any]:
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": 500,
        "currency": "usd",
        "status": status,
        "reason": "fraudulent",
        "payment_intent": intent_id,
        "charge": "ch_" + intent_id[3:],
        "created": created,
        "evidence_details": {"due_by": created + 7 * 86400},
    }


def _refund(refund_id: str, intent_id: str, status: str, created: int) -> dict[str, Any]:
    return {
        "id": refund_id,
        "object": "refund",
        "amount": 200,
        "currency": "usd",
        "status": status,
        "reason": "requested_by_customer",
        "payment_intent": intent_id,
        "charge": "ch_" + intent_id[3:],
        "created": created,
    }
