"""after the payment: amounts on payments, refunds and disputes

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    ]


def upgrade() -> None:
    op.add_column("payments", sa.Column("capture_method", sa.String(length=32), nullable=True))
    for column in ("amount_received", "amount_capturable"):
        op.add_column(
            "payments", sa.Column(column, sa.BigInteger(), server_default="0", nullable=False)
        )
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("charge_id", sa.String(length=255), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("failure_reason", sa.String(length=64), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
    )
    op.create_index("ix_refunds_payment_intent_id", "refunds", ["payment_intent_id"])
    op.create_index("ix_refunds_charge_id", "refunds", ["charge_id"])
    op.create_table(
        "disputes",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("charge_id", sa.String(length=255), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("evidence_due_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_charge_refundable", sa.Boolean(), nullable=True),
        sa.Column("funds_withdrawn", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("funds_reinstated", sa.Boolean(), server_default="false", nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disputes")),
    )
    op.create_index("ix_disputes_payment_intent_id", "disputes", ["payment_intent_id"])
    op.create_index("ix_disputes_charge_id", "disputes", ["charge_id"])


def downgrade() -> None:
    op.drop_table("disputes")
    op.drop_table("refunds")
    for column in ("amount_capturable", "amount_received", "capture_method"):
        op.drop_column("payments", column)
