import { PaymentError, createPaymentClient } from "./payment.js";

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

// A checkout session the shop's back end priced (/checkout/<id>#<token>), or, on the demo page,
// one this page asks for with the amount typed in (the stand-in's dev setup only).
const sessionId = root.dataset.sessionId || null;
const demo = sessionId === null;
// One checkout = one session = one PaymentIntent, kept in this tab across retries and reloads:
// a second attempt can only replay it, never make another. Once Stripe has accepted the
// payment the order is marked paid and Pay stays off.
const ORDER_KEY = demo ? "checkout-demo-order" : `checkout-order:${sessionId}`;

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

// The session's token comes in the URL's fragment, which no server sees; it is kept for this
// tab and taken out of the address bar (and so out of history and screenshots).
function sessionOrder() {
  const fromUrl = decodeURIComponent(location.hash.slice(1));
  const saved = savedOrder();
  if (fromUrl && !(saved && saved.token === fromUrl)) saveOrder({ token: fromUrl, paid: false });
  if (fromUrl) history.replaceState(null, "", location.pathname + location.search);
  return savedOrder();
}

async function demoSession(details) {
  let response;
  let body = null;
  try {
    response = await fetch("/api/checkout-sessions", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...details, metadata: { source: "demo-page" } }),
    });
    body = await response.json();
  } catch {
    throw new PaymentError("We could not reach the payment service. Check your connection and try again.");
  }
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new PaymentError(error.message || "The payment could not be started.", {
      code: error.code,
      field: error.field,
    });
  }
  return body.token;
}

// The demo's same amount and currency keep their session; another order gets a new one.
async function demoOrder() {
  const details = {
    amount: Math.round(Number(form.amount.value) * 100),
    currency: form.currency.value,
  };
  const saved = savedOrder();
  if (saved && saved.amount === details.amount && saved.currency === details.currency) return saved;
  const order = { ...details, token: await demoSession(details), paid: false };
  saveOrder(order);
  return order;
}

function render(state, detail = {}) {
  const locked = client.busy || client.paid || (savedOrder() || {}).paid === true;
  button.disabled = locked;
  button.setAttribute("aria-busy", String(client.busy));
  if (demo) form.amount.disabled = form.currency.disabled = locked;
  status.dataset.state = state;
  status.textContent = state === "failed" ? detail.error.message : LABELS[state];
  if (detail.payment) status.dataset.paymentStatus = detail.payment.status;
  if (detail.backingOffMs !== undefined) status.dataset.backingOff = "true";
  newPayment.hidden = !demo || !(state === "succeeded" || state === "delayed");
}

client.onChange(render);

async function follow(order, { confirmWith = null } = {}) {
  const { paymentIntentId, clientSecret } = await client.createPayment({}, { checkoutSession: order.token });
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
  let order;
  try {
    order = demo ? await demoOrder() : saved;
  } catch (error) {
    render("failed", { error });
    return;
  }
  if (!order || !order.token) {
    render("failed", { error: new PaymentError("This checkout link is incomplete. Open it again from the shop.") });
    return;
  }
  try {
    await follow(order, { confirmWith: { name: form.name.value || undefined } });
  } catch {
    // The client already moved to "failed" with a message for the customer.
  }
});

newPayment.addEventListener("click", () => {
  sessionStorage.removeItem(ORDER_KEY);
  client.reset();
});

// A reload of a paid order resumes following it instead of offering to pay again.
const resumed = demo ? savedOrder() : sessionOrder();
if (resumed && resumed.paid) {
  if (demo) {
    form.amount.value = (resumed.amount / 100).toFixed(2);
    form.currency.value = resumed.currency;
  }
  follow(resumed).catch((error) => {
    // The session's payment succeeded while the page was away: nothing left to follow.
    if (error.code === "checkout_session_completed") render("succeeded");
  });
} else {
  render("idle");
}
