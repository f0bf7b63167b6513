"""handler run retry state: next_attempt_at and replays

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "handler_runs", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "handler_runs",
        sa.Column("replays", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("handler_runs", "replays")
    op.drop_column("handler_runs", "next_attempt_at")
