"""Mentions and notifications: the mentions stored with each message, a member's
notification level per room, and the notifications table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("mentions", sa.Text(), nullable=True))
    op.add_column(
        "messages",
        sa.Column("mentions_room", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("members", sa.Column("notify_level", sa.String(16), nullable=True))
    op.create_index("ix_members_room_id_notify_level", "members", ["room_id", "notify_level"])
    op.create_table(
        "notifications",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("room_id", sa.String(36), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("read", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_notifications_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["room_id"], ["rooms.id"], name="fk_notifications_room_id_rooms", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_notifications_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "id", name="pk_notifications"),
    )
    op.create_index("ix_notifications_message_id", "notifications", ["message_id"])


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_index("ix_members_room_id_notify_level", "members")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("notify_level")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("mentions_room")
        batch.drop_column("mentions")
