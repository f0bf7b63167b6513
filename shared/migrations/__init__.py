"""Alembic migrations of the database schema (`payments db upgrade`); the models are the source."""
