"""Initial schema: users, refresh tokens, rooms, members, messages, reactions, events.

Spelled out rather than built from ``parley.store.schema``: a revision must keep
creating what it created on the day it was written, whatever the schema becomes.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(36)
TIMESTAMP = sa.String(32)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=f"fk_{table}_{column}_{target}",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", ID, nullable=False),
        sa.Column("username", sa.String(32), nullable=False),
        sa.Column("display_name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(128), nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("family_id", ID, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("used_at", TIMESTAMP, nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("token_hash", name="pk_refresh_tokens"),
        _fk("refresh_tokens", "user_id", "users"),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_table(
        "rooms",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("last_event_at", TIMESTAMP, nullable=False),
        sa.Column("dm_key", sa.String(80), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rooms"),
        sa.UniqueConstraint("dm_key", name="uq_rooms_dm_key"),
    )
    op.create_index("ix_rooms_visibility_kind", "rooms", ["visibility", "kind"])
    op.create_table(
        "members",
        sa.Column("room_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("banned", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("read_seq", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("joined_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("room_id", "user_id", name="pk_members"),
        _fk("members", "room_id", "rooms"),
        _fk("members", "user_id", "users"),
    )
    op.create_index("ix_members_user_id", "members", ["user_id"])
    op.create_table(
        "messages",
        sa.Column("id", ID, nullable=False),
        sa.Column("room_id", ID, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("sender_id", ID, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("client_msg_id", sa.String(64), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("edited_at", TIMESTAMP, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("room_id", "seq", name="uq_messages_room_id_seq"),
        sa.UniqueConstraint(
            "room_id",
            "sender_id",
            "client_msg_id",
            name="uq_messages_room_id_sender_id_client_msg_id",
        ),
        _fk("messages", "room_id", "rooms"),
        _fk("messages", "sender_id", "users"),
    )
    op.create_table(
        "reactions",
        sa.Column("room_id", ID, nullable=False),
        sa.Column("message_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("emoji", sa.String(128), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("message_id", "user_id", "emoji", name="pk_reactions"),
        _fk("reactions", "room_id", "rooms"),
        _fk("reactions", "message_id", "messages"),
        _fk("reactions", "user_id", "users"),
    )
    op.create_table(
        "events",
        sa.Column("room_id", ID, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("room_id", "seq", name="pk_events"),
        _fk("events", "room_id", "rooms"),
    )


def downgrade() -> None:
    for table in ("events", "reactions", "messages", "members", "rooms", "refresh_tokens", "users"):
        op.drop_table(table)
