"""Refunds and disputes shaped like Stripe's, from its published example objects (the vendored
fixtures, MIT), tied to one of our PaymentIntents."""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from devtools.processes import REPO_ROOT

FIXTURES = REPO_ROOT / "devtools" / "stripe-fixtures" / "fixtures3.json"


@functools.cache
def _examples() -> dict[str, Any]:
    resources: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return resources


def refund(
    refund_id: str, payment_intent: str | None, amount: int, status: str, **extra: Any
) -> dict:
    obj: dict[str, Any] = copy.deepcopy(_examples()["refund"])
    obj.update(id=refund_id, payment_intent=payment_intent, amount=amount, status=status, **extra)
    return obj


def dispute(dispute_id: str, payment_intent: str | None, status: str, **extra: Any) -> dict:
    obj: dict[str, Any] = copy.deepcopy(_examples()["dispute"])
    obj.update(id=dispute_id, payment_intent=payment_intent, status=status, **extra)
    obj["evidence_details"]["due_by"] = 1_900_000_000
    return obj
