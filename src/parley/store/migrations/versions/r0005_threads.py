"""Threads: a reply names its root (``messages.thread_root_id``, with a partial index
for a thread's page), and a root carries the summary of its live replies
(``reply_count``, ``last_reply_at``, ``thread_participants``). Group direct rooms
need no schema: their key is in ``rooms.dm_key``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_PARTIAL = sa.text("thread_root_id IS NOT NULL")


def upgrade() -> None:
    op.add_column("messages", sa.Column("thread_root_id", sa.String(36), nullable=True))
    op.add_column(
        "messages",
        sa.Column("reply_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column("messages", sa.Column("last_reply_at", sa.String(32), nullable=True))
    op.add_column("messages", sa.Column("thread_participants", sa.Text(), nullable=True))
    op.create_index(
        "ix_messages_thread_root_id_seq",
        "messages",
        ["thread_root_id", "seq"],
        sqlite_where=_PARTIAL,
        postgresql_where=_PARTIAL,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_thread_root_id_seq", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        for column in ("thread_participants", "last_reply_at", "reply_count", "thread_root_id"):
            batch.drop_column(column)
