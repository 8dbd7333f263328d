"""Events name the message they carry, so that deleting or editing a message can
rewrite every stored copy of its text.

``events.message_id`` (nullable, indexed), filled in for the ``message.*`` events
already stored from their JSON.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_MESSAGE_TYPES = ("message.created", "message.edited", "message.deleted")


def upgrade() -> None:
    op.add_column("events", sa.Column("message_id", sa.String(36), nullable=True))
    op.create_index("ix_events_message_id", "events", ["message_id"])
    events = sa.table(
        "events",
        sa.column("room_id", sa.String(36)),
        sa.column("seq", sa.Integer()),
        sa.column("type", sa.String(32)),
        sa.column("data", sa.LargeBinary()),
        sa.column("message_id", sa.String(36)),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(events.c.room_id, events.c.seq, events.c.data).where(
            events.c.type.in_(_MESSAGE_TYPES)
        )
    ).all()
    update = (
        sa.update(events)
        .where(events.c.room_id == sa.bindparam("r"), events.c.seq == sa.bindparam("s"))
        .values(message_id=sa.bindparam("m"))
    )
    params = [
        {"r": room_id, "s": seq, "m": json.loads(bytes(data))["message"]["id"]}
        for room_id, seq, data in rows
    ]
    if params:
        conn.execute(update, params)


def downgrade() -> None:
    op.drop_index("ix_events_message_id", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("message_id")
