"""The event ledger: verifying and recording Stripe events once, one run per registered
handler, retries and leases, dead letters and replay, the sweeper and the reconciler."""
