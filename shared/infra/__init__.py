"""Infrastructure: the broker, the database session helpers' neighbours, encryption, the
Stripe client, the runtime every entry point builds, and which failures are transient."""
