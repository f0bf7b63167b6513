"""Dev and test tooling, never used in production: the Stripe stand-in (localstripe, taught
Stripe's behaviour), and the process and event helpers the tests and bench/ share."""
