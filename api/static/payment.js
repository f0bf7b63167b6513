// A small payment client for Stripe PaymentIntents with this service's API.
//
//   import { createPaymentClient } from "/static/payment.js";
//   const client = createPaymentClient({ stripe: Stripe(publishableKey) });
//   client.onChange((state, detail) => render(state, detail));
//   const { paymentIntentId, clientSecret } = await client.createPayment({}, { checkoutSession: token });
//   await client.confirm(clientSecret, cardElement, { name: "Jenny Rosen" });
//   const payment = await client.waitForStatus(paymentIntentId, clientSecret);
//
// States: idle, creating, confirming, processing, delayed, succeeded, failed.
// - "processing": Stripe accepted the payment and we wait for our ledger to say how it ended.
// - "delayed": it is taking longer than expected; the customer is told it is still processing
//   and is never offered to pay again (they may already have been charged).
// Every error becomes a PaymentError with a message fit to show a customer.

export const STATES = Object.freeze([
  "idle",
  "creating",
  "confirming",
  "processing",
  "delayed",
  "succeeded",
  "failed",
]);
// Once Stripe has said one of these, the card may have been charged: never offer Pay again.
export const CHARGED_OR_CHARGING = new Set(["succeeded", "processing", "requires_capture"]);
const FINAL = new Set(["succeeded", "canceled", "requires_payment_method"]);

const DECLINE_MESSAGES = {
  insufficient_funds: "Your card has insufficient funds. Try another card.",
  generic_decline: "Your card was declined. Try another card.",
  card_declined: "Your card was declined. Try another card.",
  lost_card: "Your card was declined. Try another card.",
  stolen_card: "Your card was declined. Try another card.",
  expired_card: "Your card has expired. Try another card.",
  incorrect_cvc: "Your card's security code is incorrect. Check it and try again.",
  processing_error: "An error occurred while processing your card. Try again.",
  payment_intent_authentication_failure: "Authentication failed. Try again or use another card.",
};

export class PaymentError extends Error {
  constructor(message, { code = null, declineCode = null, field = null, retryAfterMs = null } = {}) {
    super(message);
    this.name = "PaymentError";
    this.code = code;
    this.declineCode = declineCode;
    this.field = field;
    this.retryAfterMs = retryAfterMs;
  }
}

export function messageFor({ code, decline_code: declineCode, declineCode: camel, message } = {}) {
  const decline = declineCode || camel;
  return DECLINE_MESSAGES[decline] || DECLINE_MESSAGES[code] || message || "The payment could not be completed.";
}

// Retry-After in seconds (or an HTTP date), as milliseconds; null when absent or unreadable.
export function retryAfterMs(header, now = Date.now()) {
  if (!header) return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(header);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

// The next wait of a poll that backs off: doubling from the base up to a cap, with jitter so
// many waiting pages do not poll in step, and never sooner than the server asked.
export function nextPollDelay(attempt, { baseMs, capMs, serverMs = null, random = Math.random }) {
  const backoff = Math.min(capMs, baseMs * 2 ** attempt);
  const jittered = backoff / 2 + random() * (backoff / 2);
  return Math.max(jittered, serverMs || 0);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function createPaymentClient({
  stripe,
  apiBase = "",
  pollIntervalMs = 1000,
  maxPollIntervalMs = 10000,
  timeoutMs = 60000,
  fetchImpl = (...args) => fetch(...args),
} = {}) {
  let state = "idle";
  // What Stripe said at the last confirm. "succeeded" is final at Stripe: a failure our ledger
  // still shows then is from an earlier attempt on the same PaymentIntent, not this one.
  let confirmedAs = null;
  const listeners = new Set();

  function set(next, detail = {}) {
    state = next;
    for (const listener of listeners) listener(state, detail);
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetchImpl(apiBase + path, {
        credentials: "same-origin",
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
      throw new PaymentError(message, {
        code: error.code || `http_${response.status}`,
        field: error.field,
        retryAfterMs: retryAfterMs(response.headers.get("Retry-After")),
      });
    }
    return body;
  }

  function fail(error) {
    const failure = error instanceof PaymentError ? error : new PaymentError(messageFor(error || {}));
    set("failed", { error: failure });
    throw failure;
  }

  // A create that the server is still working on (409 idempotency_key_in_use) is retried
  // with the same session or key, as Retry-After says: it answers with the same PaymentIntent.
  async function createWithKey(order, headers) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await api("/api/create-payment", {
          method: "POST",
          headers,
          body: JSON.stringify(order),
        });
      } catch (error) {
        if (!(error instanceof PaymentError) || error.code !== "idempotency_key_in_use" || attempt >= 10) throw error;
        await sleep(nextPollDelay(attempt, { baseMs: 500, capMs: 5000, serverMs: error.retryAfterMs }));
      }
    }
  }

  function failedPaymentError(payment) {
    return new PaymentError(messageFor(payment.lastError || { message: `The payment is ${payment.status}.` }), {
      code: payment.lastError && payment.lastError.code,
      declineCode: payment.lastError && payment.lastError.declineCode,
    });
  }

  return {
    get state() {
      return state;
    },
    // While busy, or once the card may have been charged, the page must not offer Pay.
    get busy() {
      return ["creating", "confirming", "processing", "delayed"].includes(state);
    },
    get paid() {
      return ["processing", "delayed", "succeeded"].includes(state);
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    reset() {
      set("idle");
    },

    // A checkout session's browser sends its token: the session (which the shop's back end
    // priced) is the order and the key, so a second attempt can only replay its PaymentIntent.
    // A back end may instead send the order with an `idempotencyKey`, the same for every
    // attempt at one order (retries, reloads).
    async createPayment(order = {}, { checkoutSession = null, idempotencyKey = null } = {}) {
      if (!checkoutSession && !idempotencyKey) {
        throw new Error("createPayment needs a checkoutSession token or the order's idempotencyKey");
      }
      confirmedAs = null;
      set("creating");
      try {
        const body = await createWithKey(checkoutSession ? {} : order, {
          ...(checkoutSession ? { "X-Checkout-Session": checkoutSession } : {}),
          ...(idempotencyKey ? { "Idempotency-Key": idempotencyKey } : {}),
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
        return fail(new PaymentError(messageFor(error), { code: error.code, declineCode: error.decline_code }));
      }
      confirmedAs = result.paymentIntent.status;
      set("processing", { paymentIntent: result.paymentIntent });
      return result.paymentIntent;
    },

    // Polls our own record, which the webhook pipeline keeps: the status a merchant acts on.
    // The client secret is the proof that lets this page read it. Errors and 429s back off
    // (honouring Retry-After) and keep waiting; past the timeout the page says the payment is
    // still processing, and keeps checking, slowly, without ever offering to pay again.
    async waitForStatus(paymentIntentId, clientSecret) {
      set("processing");
      const started = Date.now();
      for (let attempt = 0; ; attempt++) {
        let payment = null;
        let serverMs = null;
        try {
          payment = await api(`/api/payments/${encodeURIComponent(paymentIntentId)}`, {
            headers: { "X-Client-Secret": clientSecret },
          });
        } catch (error) {
          if (!(error instanceof PaymentError)) throw error;
          serverMs = error.retryAfterMs;
        }
        if (payment && payment.status === "succeeded") {
          set("succeeded", { payment });
          return payment;
        }
        const stale = confirmedAs === "succeeded";
        if (!stale && payment && FINAL.has(payment.status) && (payment.status !== "requires_payment_method" || payment.lastError)) {
          return fail(failedPaymentError(payment));
        }
        if (state === "processing" && Date.now() - started > timeoutMs) set("delayed", { payment });
        if (serverMs !== null) set(state, { payment, backingOffMs: serverMs });
        await sleep(nextPollDelay(attempt, { baseMs: pollIntervalMs, capMs: maxPollIntervalMs, serverMs }));
      }
    },
  };
}
