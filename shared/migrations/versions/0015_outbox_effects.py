"""outbox_effects: the side effects handlers ask for, delivered after their run commits

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_effects",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("handler", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload_encrypted", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("replays", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'dead')", name=op.f("ck_outbox_effects_status_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_effects")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_outbox_effects_idempotency_key")),
        sa.UniqueConstraint(
            "event_id", "handler", "name", name="uq_outbox_effects_event_handler_name"
        ),
    )
    op.create_index(
        "ix_outbox_effects_due",
        "outbox_effects",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_outbox_effects_status_created_at",
        "outbox_effects",
        ["status", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_effects_status_created_at", table_name="outbox_effects")
    op.drop_index("ix_outbox_effects_due", table_name="outbox_effects")
    op.drop_table("outbox_effects")
