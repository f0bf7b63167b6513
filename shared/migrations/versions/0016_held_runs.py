"""handler_runs: a run may be held (its event's API version is not one its handler accepts)

Revision ID: 0016
Revises: 0015
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_handler_runs_status_known"), "handler_runs", type_="check")
    op.create_check_constraint(
        op.f("ck_handler_runs_status_known"),
        "handler_runs",
        "status IN ('pending', 'done', 'dead', 'held')",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_handler_runs_status_known"), "handler_runs", type_="check")
    op.create_check_constraint(
        op.f("ck_handler_runs_status_known"),
        "handler_runs",
        "status IN ('pending', 'done', 'dead')",
    )
