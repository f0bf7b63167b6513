"""Observability: structured logs, metrics, redaction of secrets and cards, Sentry, health."""
