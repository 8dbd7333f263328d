"""The relational schema, as SQLAlchemy Core tables shared by SQLite and PostgreSQL.

Portable on purpose: ids are UUID text, timestamps RFC 3339 text from
``parley.domain.models.utc_now()`` (they sort as text in both databases), booleans
and integers only. ``rooms.last_seq`` is each room's sequence counter: the one row a
writer locks to take the next ``seq`` (never ``MAX(seq) + 1``, which races).

Migrations (``parley/store/migrations``) create these tables; a contract test checks
that the migrated database and this module agree, so change both together.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import TSVECTOR

ID = String(36)
TIMESTAMP = String(32)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("id", ID, primary_key=True),
    Column("username", String(32), nullable=False, unique=True),
    Column("display_name", String(64), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("is_admin", Boolean, nullable=False, server_default=false()),
    Column("created_at", TIMESTAMP, nullable=False),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(128), primary_key=True),
    Column("user_id", ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("family_id", ID, nullable=False, index=True),
    Column("expires_at", TIMESTAMP, nullable=False),
    Column("used_at", TIMESTAMP, nullable=True),
    Column("revoked", Boolean, nullable=False, server_default=false()),
)

rooms = Table(
    "rooms",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(80), nullable=False),
    Column("visibility", String(16), nullable=False),
    Column("topic", Text, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("created_at", TIMESTAMP, nullable=False),
    Column("last_seq", Integer, nullable=False),
    # When last_seq last moved: orders a user's room list by activity.
    Column("last_event_at", TIMESTAMP, nullable=False),
    # "min_user_id:max_user_id" for a direct room, so a pair has at most one.
    Column("dm_key", String(80), nullable=True, unique=True),
    Index(None, "visibility", "kind"),
)

members = Table(
    "members",
    metadata,
    Column("room_id", ID, ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # NULL for a banned non-member: the row only remembers the ban.
    Column("role", String(16), nullable=True),
    Column("banned", Boolean, nullable=False, server_default=false()),
    Column("read_seq", Integer, nullable=False, server_default=text("0")),
    Column("joined_at", TIMESTAMP, nullable=False),
    PrimaryKeyConstraint("room_id", "user_id"),
    Index(None, "user_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", ID, primary_key=True),
    Column("room_id", ID, ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("sender_id", ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("body", Text, nullable=False),
    Column("client_msg_id", String(64), nullable=True),
    Column("created_at", TIMESTAMP, nullable=False),
    Column("edited_at", TIMESTAMP, nullable=True),
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("deleted", Boolean, nullable=False, server_default=false()),
    # The data key that sealed ``body`` (base64 of nonce and ciphertext); NULL: plain
    # text, from before encryption at rest, or a tombstone's empty body.
    Column("key_id", Integer, nullable=True),
    # Doubles as the (room_id, seq) index every page and unread count walks.
    UniqueConstraint("room_id", "seq"),
    # Idempotent sends; rows with a NULL client_msg_id never collide.
    UniqueConstraint("room_id", "sender_id", "client_msg_id"),
)

reactions = Table(
    "reactions",
    metadata,
    Column("room_id", ID, ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False),
    Column("message_id", ID, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("emoji", String(128), nullable=False),
    # Orders emoji by first use when reactions are folded into a message.
    Column("created_at", TIMESTAMP, nullable=False),
    PrimaryKeyConstraint("message_id", "user_id", "emoji"),
)

events = Table(
    "events",
    metadata,
    Column("room_id", ID, ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("type", String(32), nullable=False),
    # The event's JSON exactly as sent to clients, encoded once when stored.
    Column("data", LargeBinary, nullable=False),
    # The message a message.* event carries: deleting or editing it rewrites these
    # events' copies of its text (``parley.store.erase``).
    Column("message_id", ID, nullable=True),
    # The data key that sealed ``data`` (nonce and ciphertext); NULL: plain JSON.
    Column("key_id", Integer, nullable=True),
    PrimaryKeyConstraint("room_id", "seq"),
    Index(None, "message_id"),
)

keys = Table(
    "keys",
    metadata,
    # Data keys for encryption at rest, each wrapped (sealed) by the master key; the
    # highest id seals new writes (``parley.store.crypto``).
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", TIMESTAMP, nullable=False),
)

search_docs = Table(
    "search_docs",
    metadata,
    # The blind search index (``parley.store.search``): one row per message that can
    # be found, holding its terms' keyed hashes in order, never its text. On SQLite the
    # FTS5 table ``search_fts`` indexes ``tokens`` (kept in step by triggers, made by
    # the migration); on PostgreSQL ``tokens`` is a tsvector with a GIN index (also the
    # migration's: ``SEARCH_GIN``).
    Column("doc", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column(
        "message_id",
        ID,
        ForeignKey("messages.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    # The message's room: a search checks membership here, before it reads messages.
    Column("room_id", ID, ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False),
    Column("tokens", Text().with_variant(TSVECTOR(), "postgresql"), nullable=False),
)

SEARCH_FTS = "search_fts"
"""SQLite's FTS5 table over ``search_docs.tokens`` and its shadow tables' prefix."""
SEARCH_GIN = "ix_search_docs_tokens"
"""PostgreSQL's GIN index on ``search_docs.tokens``."""


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """For Alembic's comparisons: the search index's dialect-specific parts are the
    migration's, not ``metadata``'s (SQLAlchemy describes neither a virtual table
    nor an index that exists on one database only)."""
    if name is None:
        return True
    if type_ == "table":
        return not name.startswith(SEARCH_FTS)
    return not (type_ == "index" and name == SEARCH_GIN)
