import { createPaymentClient } from "./payment.js";

const root = document.getElementById("checkout");
const stripe = Stripe(root.dataset.publishableKey);
const card = stripe.elements().create("card");
card.mount("#card-element");

const form = document.getElementById("payment-form");
const button = document.getElementById("pay");
const status = document.getElementById("status");
const newPayment = document.getElementById("new-payment");
const client = createPaymentClient({
  stripe,
  pollIntervalMs: 500,
  timeoutMs: Number(root.dataset.statusTimeoutMs) || 60000,
});

const LABELS = {
  idle: "",
  creating: "Starting the payment…",
  confirming: "Confirming with your bank…",
  processing: "Waiting for the payment to complete…",
  delayed: "Your payment is still processing. You will not be charged twice; we will email you when it completes.",
  succeeded: "Payment succeeded. Thank you!",
};

// One checkout = one order = one idempotency key, kept in this tab across retries and reloads.
// A second attempt at the same order can then only replay its PaymentIntent, never make a new
// one; once Stripe has accepted the payment the order is marked paid and Pay stays off.
const ORDER_KEY = "checkout-order";

function orderOf() {
  return {
    amount: Math.round(Number(form.amount.value) * 100),
    currency: form.currency.value,
    metadata: { source: "checkout-page" },
  };
}

function savedOrder() {
  try {
    return JSON.parse(sessionStorage.getItem(ORDER_KEY) || "null");
  } catch {
    return null;
  }
}

function saveOrder(order) {
  sessionStorage.setItem(ORDER_KEY, JSON.stringify(order));
}

// The same order (amount and currency) keeps its key; another order gets a fresh one.
function orderFor(details) {
  const saved = savedOrder();
  if (saved && saved.amount === details.amount && saved.currency === details.currency) return saved;
  const order = { ...details, idempotencyKey: crypto.randomUUID(), paid: false };
  saveOrder(order);
  return order;
}

function render(state, detail = {}) {
  const locked = client.busy || client.paid || (savedOrder() || {}).paid === true;
  button.disabled = locked;
  button.setAttribute("aria-busy", String(client.busy));
  form.amount.disabled = form.currency.disabled = locked;
  status.dataset.state = state;
  status.textContent = state === "failed" ? detail.error.message : LABELS[state];
  if (detail.payment) status.dataset.paymentStatus = detail.payment.status;
  if (detail.backingOffMs !== undefined) status.dataset.backingOff = "true";
  newPayment.hidden = !(state === "succeeded" || state === "delayed");
}

client.onChange(render);

async function follow(order, { confirmWith = null } = {}) {
  const { paymentIntentId, clientSecret } = await client.createPayment(order, {
    idempotencyKey: order.idempotencyKey,
  });
  status.dataset.paymentIntentId = paymentIntentId;
  if (confirmWith) {
    const intent = await client.confirm(clientSecret, card, confirmWith);
    // From here on the card may be charged: this order is paid, whatever the polling sees.
    saveOrder({ ...order, paid: true });
    if (intent.status === "succeeded" || intent.status === "processing") render(client.state);
  }
  await client.waitForStatus(paymentIntentId, clientSecret);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const saved = savedOrder();
  if (client.busy || client.paid || (saved && saved.paid)) {
    // A second submit of a paid or in-flight order (a double click, a script): refuse it.
    status.dataset.refusedResubmits = String(Number(status.dataset.refusedResubmits || 0) + 1);
    return;
  }
  try {
    await follow(orderFor(orderOf()), { confirmWith: { name: form.name.value || undefined } });
  } catch {
    // The client already moved to "failed" with a message for the customer.
  }
});

newPayment.addEventListener("click", () => {
  sessionStorage.removeItem(ORDER_KEY);
  client.reset();
});

// A reload of a paid order resumes following it instead of offering to pay again.
const resumed = savedOrder();
if (resumed && resumed.paid) {
  form.amount.value = (resumed.amount / 100).toFixed(2);
  form.currency.value = resumed.currency;
  follow(resumed).catch(() => {});
} else {
  render("idle");
}
