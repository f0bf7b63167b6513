import { createPaymentClient } from "./payment.js";

const root = document.getElementById("checkout");
const stripe = Stripe(root.dataset.publishableKey);
const card = stripe.elements().create("card");
card.mount("#card-element");

const form = document.getElementById("payment-form");
const button = document.getElementById("pay");
const status = document.getElementById("status");
const client = createPaymentClient({ stripe, pollIntervalMs: 500 });

const LABELS = {
  idle: "",
  creating: "Starting the payment…",
  confirming: "Confirming with your bank…",
  processing: "Waiting for the payment to complete…",
  succeeded: "Payment succeeded. Thank you!",
};

client.onChange((state, detail) => {
  button.disabled = client.busy;
  button.setAttribute("aria-busy", String(client.busy));
  status.dataset.state = state;
  status.textContent = state === "failed" ? detail.error.message : LABELS[state];
  if (detail.payment) status.dataset.paymentStatus = detail.payment.status;
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (client.busy) return;
  const amount = Math.round(Number(form.amount.value) * 100);
  const currency = form.currency.value;
  try {
    const { paymentIntentId, clientSecret } = await client.createPayment({
      amount,
      currency,
      metadata: { source: "checkout-page" },
    });
    status.dataset.paymentIntentId = paymentIntentId;
    await client.confirm(clientSecret, card, { name: form.name.value || undefined });
    await client.waitForStatus(paymentIntentId);
  } catch {
    // The client already moved to "failed" with a message for the customer.
  }
});
