"""The models and the migrations describe the same schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.models import Base


def test_migrations_build_exactly_what_the_models_declare(fast_engine):
    with fast_engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_database_errors_never_carry_the_values_bound_to_them(db):
    import pytest
    from sqlalchemy.exc import IntegrityError

    from shared.ledger.runs.rows import error_text
    from shared.models import Payment
    from shared.observability.redaction import redact

    with pytest.raises(IntegrityError) as failed, db.begin() as session:
        session.add(
            Payment(
                amount=-5,
                currency="usd",
                status="creating",
                metadata_={"note": "value-that-must-not-leak"},
                idempotency_key="key-that-must-not-leak",
            )
        )
    # SQLAlchemy hides what we bound; PostgreSQL's own DETAIL quotes the row, and is masked
    # wherever error text goes (logs, handler_runs.last_error, /admin/dlq, Sentry).
    assert "hidden due to hide_parameters" in str(failed.value)
    assert "must-not-leak" not in redact(str(failed.value))
    assert "must-not-leak" not in error_text(failed.value)
