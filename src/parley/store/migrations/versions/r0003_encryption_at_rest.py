"""Encryption at rest: the ``keys`` table (data keys wrapped by the master key) and
the key id of each sealed message body and event (NULL: plain text from before).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "keys",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_keys"),
    )
    op.add_column("messages", sa.Column("key_id", sa.Integer(), nullable=True))
    op.add_column("events", sa.Column("key_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in ("events", "messages"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("key_id")
    op.drop_table("keys")
