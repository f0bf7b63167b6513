"""End-to-end tests: the real service on the real parts (PostgreSQL, Redis, RabbitMQ, the Stripe
stand-in, Celery workers, gunicorn, nginx, Chromium), each promise from the outside."""
