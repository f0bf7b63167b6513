"""The stand-in's amounts as Stripe keeps them: PaymentIntents carry ``amount_received`` and
``amount_capturable`` (localstripe leaves them out), and a refund takes what is left of the
charge by default and never more (localstripe refunds the whole charge again and again).

At Stripe, ``amount_capturable`` is what an authorized manual-capture payment may still capture
(0 otherwise) and ``amount_received`` what was captured. localstripe captures in part by
refunding the rest of the charge; the amount asked is remembered here at capture.
Still unlike Stripe: that release shows as a Refund object (at Stripe only the charge's amounts
say so), and no ``payment_intent.amount_capturable_updated`` event is sent on authorization.
"""

from __future__ import annotations

from typing import Any

from localstripe.errors import UserError
from localstripe.resources import Charge, PaymentIntent, Refund, try_convert_to_int


def _amount_received(self: Any) -> int:
    charge = self.latest_charge
    if charge is None or charge.status != "succeeded" or not charge.captured:
        return 0
    captured = getattr(charge, "_captured_amount", None)
    return int(charge.amount if captured is None else captured)


def _amount_capturable(self: Any) -> int:
    return int(self.amount) if self.status == "requires_capture" else 0


def _refund_error(code: str, message: str) -> UserError:
    return UserError(400, message, {"code": code})


def _left_to_refund(charge: Any, payment_intent: Any) -> tuple[str | None, int | None]:
    if charge is None and isinstance(payment_intent, str):
        latest = PaymentIntent._api_retrieve(payment_intent).latest_charge
        charge = None if latest is None else latest.id
    if not isinstance(charge, str):
        return None, None
    charge_obj = Charge._api_retrieve(charge)
    return charge, int(charge_obj.amount) - int(charge_obj.amount_refunded)


def _install_refund_limits() -> None:
    original_init = Refund.__init__

    def init(self: Any, charge: Any = None, payment_intent: Any = None, amount: Any = None,
             **kwargs: Any) -> None:  # fmt: skip
        charge_id, left = _left_to_refund(charge, payment_intent)
        if left is not None:
            asked = try_convert_to_int(amount) if amount is not None else left
            if left <= 0:
                raise _refund_error(
                    "charge_already_refunded", f"Charge {charge_id} has already been refunded."
                )
            if isinstance(asked, int) and asked > left:
                raise _refund_error(
                    "amount_too_large",
                    f"Refund amount ({asked}) is greater than unrefunded amount on charge "
                    f"({left}).",
                )
            amount = asked
        original_init(self, charge=charge, payment_intent=payment_intent, amount=amount, **kwargs)

    Refund.__init__ = init


def install() -> None:
    original_capture = Charge._capture

    def capture(self: Any, amount: Any, on_success: Any = None) -> Any:
        self._captured_amount = try_convert_to_int(amount) if amount is not None else None
        return original_capture(self, amount, on_success)

    if not isinstance(getattr(PaymentIntent, "amount_received", None), property):
        _install_refund_limits()
        Charge._capture = capture
        PaymentIntent.amount_received = property(_amount_received)
        PaymentIntent.amount_capturable = property(_amount_capturable)
