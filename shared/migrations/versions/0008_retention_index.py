"""an index for retention: stripe_events by received_at

Revision ID: 0008
Revises: 0007

Built CONCURRENTLY, outside the migration's transaction: on a ledger of millions of events a
plain CREATE INDEX would block ingest (writes to stripe_events) for as long as it takes.
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_stripe_events_received_at",
            "stripe_events",
            ["received_at"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_stripe_events_received_at",
            table_name="stripe_events",
            postgresql_concurrently=True,
            if_exists=True,
        )
