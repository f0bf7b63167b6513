// A small payment client for Stripe PaymentIntents with this service's API.
//
//   import { createPaymentClient } from "/static/payment.js";
//   const client = createPaymentClient({ stripe: Stripe(publishableKey) });
//   client.onChange((state, detail) => render(state, detail));
//   const { paymentIntentId, clientSecret } = await client.createPayment({ amount: 1000, currency: "usd" });
//   await client.confirm(clientSecret, cardElement, { name: "Jenny Rosen" });
//   const payment = await client.waitForStatus(paymentIntentId);
//
// States: idle, creating, confirming, processing, succeeded, failed. Every error becomes a
// PaymentError with a message fit to show a customer.

export const STATES = Object.freeze(["idle", "creating", "confirming", "processing", "succeeded", "failed"]);
const FINAL = new Set(["succeeded", "canceled", "requires_payment_method"]);

const DECLINE_MESSAGES = {
  insufficient_funds: "Your card has insufficient funds. Try another card.",
  generic_decline: "Your card was declined. Try another card.",
  card_declined: "Your card was declined. Try another card.",
  expired_card: "Your card has expired.",
  incorrect_cvc: "Your card's security code is incorrect.",
  processing_error: "An error occurred while processing your card. Try again.",
  payment_intent_authentication_failure: "Authentication failed. Try again or use another card.",
};

export class PaymentError extends Error {
  constructor(message, { code = null, declineCode = null, field = null } = {}) {
    super(message);
    this.name = "PaymentError";
    this.code = code;
    this.declineCode = declineCode;
    this.field = field;
  }
}

export function messageFor({ code, decline_code: declineCode, declineCode: camel, message } = {}) {
  const decline = declineCode || camel;
  return DECLINE_MESSAGES[decline] || DECLINE_MESSAGES[code] || message || "The payment could not be completed.";
}

export function createPaymentClient({
  stripe,
  apiBase = "",
  pollIntervalMs = 1000,
  timeoutMs = 60000,
  fetchImpl = (...args) => fetch(...args),
} = {}) {
  let state = "idle";
  const listeners = new Set();

  function set(next, detail = {}) {
    state = next;
    for (const listener of listeners) listener(state, detail);
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetchImpl(apiBase + path, {
        ...options,
        headers: { "Content-Type": "application/json", ...(options.headers || {}) },
      });
    } catch {
      throw new PaymentError("We could not reach the payment service. Check your connection and try again.", {
        code: "network_error",
      });
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const error = (body && body.error) || {};
      const message =
        response.status === 429
          ? "Too many attempts. Wait a moment and try again."
          : response.status >= 500
            ? "The payment service is unavailable right now. Try again shortly."
            : error.message || "The payment could not be started.";
      throw new PaymentError(message, { code: error.code || `http_${response.status}`, field: error.field });
    }
    return body;
  }

  function fail(error) {
    const failure = error instanceof PaymentError ? error : new PaymentError(messageFor(error || {}));
    set("failed", { error: failure });
    throw failure;
  }

  return {
    get state() {
      return state;
    },
    get busy() {
      return state === "creating" || state === "confirming" || state === "processing";
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    reset() {
      set("idle");
    },

    async createPayment({ amount, currency, metadata = {} }, { idempotencyKey } = {}) {
      set("creating");
      try {
        const body = await api("/api/create-payment", {
          method: "POST",
          headers: { "Idempotency-Key": idempotencyKey || crypto.randomUUID() },
          body: JSON.stringify({ amount, currency, metadata }),
        });
        return { paymentIntentId: body.paymentIntentId, clientSecret: body.clientSecret };
      } catch (error) {
        return fail(error);
      }
    },

    async confirm(clientSecret, cardElement, billingDetails = {}) {
      set("confirming");
      // Stripe.js runs the 3-D Secure challenge itself when the card asks for it.
      let result;
      try {
        result = await stripe.confirmCardPayment(clientSecret, {
          payment_method: { card: cardElement, billing_details: billingDetails },
        });
      } catch {
        // Stripe.js itself failed (network, a blocked frame): never leave the page "confirming".
        return fail(
          new PaymentError("We could not confirm the payment with your bank. Try again.", {
            code: "confirmation_failed",
          }),
        );
      }
      if (result.error) {
        const error = result.error;
        return fail(
          new PaymentError(messageFor(error), { code: error.code, declineCode: error.decline_code }),
        );
      }
      set("processing", { paymentIntent: result.paymentIntent });
      return result.paymentIntent;
    },

    // Polls our own record, which the webhook pipeline keeps: the status a merchant acts on.
    async waitForStatus(paymentIntentId) {
      set("processing");
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        let payment = null;
        try {
          payment = await api(`/api/payments/${encodeURIComponent(paymentIntentId)}`);
        } catch (error) {
          if (!(error instanceof PaymentError) || !["not_found", "http_404"].includes(error.code)) throw error;
        }
        if (payment && payment.status === "succeeded") {
          set("succeeded", { payment });
          return payment;
        }
        if (payment && FINAL.has(payment.status) && (payment.status !== "requires_payment_method" || payment.lastError)) {
          return fail(
            new PaymentError(messageFor(payment.lastError || { message: `The payment is ${payment.status}.` }), {
              code: payment.lastError && payment.lastError.code,
              declineCode: payment.lastError && payment.lastError.declineCode,
            }),
          );
        }
        await new Promise((resolve) => setTimeout(resolve, pollIntervalMs));
      }
      return fail(new PaymentError("The payment is still being processed. We will email you when it completes.", { code: "timeout" }));
    },
  };
}
