"""caller-scoped idempotency keys, create leases, client secret hashes

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("payments", sa.Column("caller", sa.String(length=80), nullable=True))
    op.add_column(
        "payments", sa.Column("create_lease_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "payments", sa.Column("client_secret_sha256", sa.String(length=64), nullable=True)
    )
    # Keys recorded before callers existed belong to no caller anyone can present again.
    op.execute("UPDATE payments SET caller = 'legacy' WHERE idempotency_key IS NOT NULL")
    op.drop_constraint("uq_payments_idempotency_key", "payments", type_="unique")
    op.create_unique_constraint(
        "uq_payments_caller_idempotency_key", "payments", ["caller", "idempotency_key"]
    )


def downgrade() -> None:
    op.drop_constraint("uq_payments_caller_idempotency_key", "payments", type_="unique")
    op.create_unique_constraint("uq_payments_idempotency_key", "payments", ["idempotency_key"])
    op.drop_column("payments", "client_secret_sha256")
    op.drop_column("payments", "create_lease_until")
    op.drop_column("payments", "caller")
