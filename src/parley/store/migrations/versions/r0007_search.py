"""Search: the blind index ``search_docs`` (keyed hashes of each message's terms, in
order) and, on SQLite, the FTS5 table ``search_fts`` that triggers keep in step with
it; on PostgreSQL the hashes are a tsvector under a GIN index. Existing messages are
indexed by ``parley admin search reindex`` (a node does it in the background too).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

_SQLITE = [
    # ascii tokenizer: the hashes are hex; detail=full keeps positions for phrases;
    # external content: the terms are read from search_docs when FTS5 needs them (a
    # 'delete' needs the old ones).
    "CREATE VIRTUAL TABLE search_fts USING fts5(tokens, content='search_docs', "
    "content_rowid='doc', tokenize='ascii')",
    # Merge segments 16 at a time, not 4: a commit of a few sends writes a small
    # segment, and merging them in bigger steps cost ~25% less per indexed send here.
    "INSERT INTO search_fts(search_fts, rank) VALUES ('automerge', 16)",
    "INSERT INTO search_fts(search_fts, rank) VALUES ('crisismerge', 64)",
    "CREATE TRIGGER search_docs_ai AFTER INSERT ON search_docs BEGIN "
    "INSERT INTO search_fts(rowid, tokens) VALUES (new.doc, new.tokens); END",
    "CREATE TRIGGER search_docs_ad AFTER DELETE ON search_docs BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, tokens) VALUES ('delete', old.doc, old.tokens); "
    "END",
]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "search_docs",
        sa.Column(
            "doc",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("room_id", sa.String(36), nullable=False),
        sa.Column(
            "tokens", sa.Text().with_variant(postgresql.TSVECTOR(), "postgresql"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_search_docs_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["room_id"], ["rooms.id"], name="fk_search_docs_room_id_rooms", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("doc", name="pk_search_docs"),
        sa.UniqueConstraint("message_id", name="uq_search_docs_message_id"),
    )
    if sqlite:
        for statement in _SQLITE:
            op.execute(statement)
    else:
        op.create_index("ix_search_docs_tokens", "search_docs", ["tokens"], postgresql_using="gin")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE search_fts")
    op.drop_table("search_docs")
