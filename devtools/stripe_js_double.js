// TEST DOUBLE of Stripe.js, for the browser tests only. Never served outside tests/.
//
// localstripe's own fake Stripe.js cannot confirm a fresh PaymentIntent, so this double
// implements the calls the checkout page uses by driving the stand-in's API (taught Stripe's
// test cards in devtools/stripe_test_mode.py): it creates the PaymentMethod from the card
// number typed in, confirms the PaymentIntent with it, and for a card that asks for 3-D Secure
// shows a challenge whose button completes the authentication. Its calls go
// through the test server that serves it, which adds the stand-in's test key (a browser's
// cross-origin request with an Authorization header needs a CORS preflight localstripe
// does not answer).
(function () {
  const API = "__PROXY__";

  function form(params) {
    return Object.entries(params)
      .filter(([, value]) => value !== undefined && value !== null)
      .map(([key, value]) => encodeURIComponent(key) + "=" + encodeURIComponent(value))
      .join("&");
  }

  async function post(path, params) {
    const response = await fetch(API + path, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: form(params),
    });
    let body = {};
    try {
      body = await response.json();
    } catch (e) {}
    return { status: response.status, body };
  }

  function cardError(body) {
    const error = (body && body.error) || {};
    return {
      error: {
        type: error.type || "card_error",
        code: error.code || "card_declined",
        decline_code: error.decline_code,
        message: error.message || "Your card was declined.",
      },
    };
  }

  function challenge() {
    return new Promise((resolve) => {
      const modal = document.createElement("div");
      modal.id = "three-d-secure";
      modal.setAttribute("role", "dialog");
      modal.style.cssText = "position:fixed;inset:0;background:rgba(0,0,0,.4);display:flex;align-items:center;justify-content:center";
      modal.innerHTML =
        "<div><p>3-D Secure test challenge</p>" +
        '<button type="button" data-testid="3ds-complete">Complete authentication</button> ' +
        '<button type="button" data-testid="3ds-fail">Fail authentication</button></div>';
      // Styled through the DOM, not a style attribute: the page's policy allows no inline styles.
      modal.firstElementChild.style.cssText = "background:#fff;padding:2rem;border-radius:8px";
      document.body.appendChild(modal);
      modal.querySelector('[data-testid="3ds-complete"]').onclick = () => { modal.remove(); resolve(true); };
      modal.querySelector('[data-testid="3ds-fail"]').onclick = () => { modal.remove(); resolve(false); };
    });
  }

  window.Stripe = function (publishableKey) {
    return {
      elements() {
        return {
          create() {
            return {
              mount(selector) {
                const input = document.createElement("input");
                input.setAttribute("data-testid", "card-number");
                input.setAttribute("autocomplete", "cc-number");
                input.placeholder = "Card number";
                document.querySelector(selector).appendChild(input);
                this.input = input;
              },
            };
          },
        };
      },

      async confirmCardPayment(clientSecret, data) {
        // A real confirmation takes a moment; so does this one, so a page's busy state shows.
        await new Promise((resolve) => setTimeout(resolve, 400));
        const intentId = clientSecret.split("_secret_")[0];
        const details = data.payment_method.billing_details || {};
        const method = await post("/v1/payment_methods", {
          type: "card",
          "card[number]": data.payment_method.card.input.value.replace(/\s+/g, ""),
          "card[exp_month]": "12",
          "card[exp_year]": "2034",
          "card[cvc]": "123",
          "billing_details[name]": details.name,
        });
        if (method.status >= 400) return cardError(method.body);
        // One confirm with the payment method, as Stripe.js sends it (and `payments dev pay`):
        // declines, 3-D Secure and a retry with another card all happen here, at the stand-in.
        const confirmed = await post("/v1/payment_intents/" + intentId + "/confirm", {
          payment_method: method.body.id,
        });
        if (confirmed.status >= 400) return cardError(confirmed.body);
        let intent = confirmed.body;
        if (intent.status === "requires_action") {
          const ok = await challenge();
          const result = await post(
            "/v1/payment_intents/" + intentId + "/_authenticate",
            { client_secret: clientSecret, success: ok ? "true" : "false", key: publishableKey },
          );
          intent = result.body;
          if (!ok) return cardError({ error: intent.last_payment_error });
        }
        return { paymentIntent: { id: intent.id, status: intent.status } };
      },
    };
  };
})();
