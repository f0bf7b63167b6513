"""checkout sessions: the sweeper finds those whose time is up

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_checkout_sessions_open_expiry",
        "checkout_sessions",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("expired_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_checkout_sessions_open_expiry", table_name="checkout_sessions")
