"""shop_orders: the shop's orders, each paid by one PaymentIntent

Revision ID: shop_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "shop_0001"
down_revision = None
branch_labels = ("shop",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shop_orders",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("payment_intent_id", sa.String(255), nullable=False, unique=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, server_default="awaiting_payment"),
        sa.Column("paid_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("shop_orders")
