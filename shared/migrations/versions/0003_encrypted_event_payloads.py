"""encrypted event payloads

Revision ID: 0003
Revises: 0002

New events are stored encrypted in payload_encrypted; existing plaintext rows stay readable
until `payments keys rotate` encrypts them (the migration has no key to do it with).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stripe_events", sa.Column("payload_encrypted", sa.Text(), nullable=True))
    op.alter_column("stripe_events", "payload", nullable=True)
    op.create_check_constraint(
        op.f("ck_stripe_events_payload_present"),
        "stripe_events",
        "payload IS NOT NULL OR payload_encrypted IS NOT NULL",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_stripe_events_payload_present"), "stripe_events")
    op.alter_column("stripe_events", "payload", nullable=False)
    op.drop_column("stripe_events", "payload_encrypted")
