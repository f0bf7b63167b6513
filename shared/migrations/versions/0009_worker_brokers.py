"""which broker each live worker consumes from

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_brokers",
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("broker", sa.String(length=512), nullable=False),
        sa.Column(
            "seen_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("hostname", name=op.f("pk_worker_brokers")),
    )


def downgrade() -> None:
    op.drop_table("worker_brokers")
