"""Dev and test tooling for the local Stripe stand-in (localstripe). Never used in production."""
