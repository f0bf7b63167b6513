"""checkout sessions: failed attempts, and the cancel their end owes Stripe

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "checkout_sessions",
        sa.Column("failed_attempts", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "checkout_sessions",
        sa.Column("max_failed_attempts", sa.Integer(), server_default="5", nullable=False),
    )
    op.add_column(
        "checkout_sessions",
        sa.Column("cancel_pending", sa.Boolean(), server_default="false", nullable=False),
    )
    op.create_index(
        "ix_checkout_sessions_cancel_pending",
        "checkout_sessions",
        ["id"],
        unique=False,
        postgresql_where=sa.text("cancel_pending"),
    )


def downgrade() -> None:
    op.drop_index("ix_checkout_sessions_cancel_pending", table_name="checkout_sessions")
    for column in ("cancel_pending", "max_failed_attempts", "failed_attempts"):
        op.drop_column("checkout_sessions", column)
