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
    # Set while a server admin has the account deactivated: no login, no refresh.
    Column("deactivated_at", TIMESTAMP, nullable=True),
    # Set when the user deleted their account: the row stays (their messages keep a
    # sender), anonymised, its username freed (``parley.store.admin``).
    Column("deleted_at", TIMESTAMP, nullable=True),
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
    # "min_user_id:max_user_id" for a direct room, so a pair has at most one; for a
    # group direct room "g:" and a hash of its people's sorted ids, one per set.
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
    # "all", "mentions" or "none"; NULL: the room kind's default.
    Column("notify_level", String(16), nullable=True),
    PrimaryKeyConstraint("room_id", "user_id"),
    Index(None, "user_id"),
    # Every send looks up who in its room chose level "all".
    Index(None, "room_id", "notify_level"),
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
    # A reply's thread root (NULL at top level); on a root, the summary of its live
    # replies, kept by the transactions that store and delete them
    # (``parley.store.threads``): ``thread_participants`` is a JSON list of user ids.
    Column("thread_root_id", ID, nullable=True),
    Column("reply_count", Integer, nullable=False, server_default=text("0")),
    Column("last_reply_at", TIMESTAMP, nullable=True),
    Column("thread_participants", Text, nullable=True),
    # The members the body mentions, user ids separated by spaces (NULL: none), and
    # whether it said @room with the right to: parsed by the server when stored.
    Column("mentions", Text, nullable=True),
    Column("mentions_room", Boolean, nullable=False, server_default=false()),
    # Doubles as the (room_id, seq) index every page and unread count walks.
    UniqueConstraint("room_id", "seq"),
    # A thread's page; partial, so top-level sends do not pay for it.
    Index(
        None,
        "thread_root_id",
        "seq",
        sqlite_where=text("thread_root_id IS NOT NULL"),
        postgresql_where=text("thread_root_id IS NOT NULL"),
    ),
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

server_settings = Table(
    "server_settings",
    metadata,
    # Settings admins change at run time, here so that every node agrees (the
    # registration mode); an absent row means the node's own default.
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", TIMESTAMP, nullable=False),
)

invites = Table(
    "invites",
    metadata,
    Column("id", ID, primary_key=True),
    # SHA-256 of the code, like refresh tokens: the code itself is shown once.
    Column("code_hash", String(128), nullable=False, unique=True),
    Column("created_by", ID, nullable=True),
    Column("created_at", TIMESTAMP, nullable=False),
    Column("expires_at", TIMESTAMP, nullable=True),
    Column("max_uses", Integer, nullable=True),
    Column("uses", Integer, nullable=False, server_default=text("0")),
)

audit_log = Table(
    "audit_log",
    metadata,
    # Ascending ids are the audit log's cursor; no foreign keys: an entry outlives
    # what it names.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", TIMESTAMP, nullable=False),
    Column("actor_id", ID, nullable=True),
    Column("action", String(32), nullable=False, index=True),
    Column("target_user_id", ID, nullable=True),
    Column("target_room_id", ID, nullable=True),
    Column("target_message_id", ID, nullable=True),
    Column("ip", String(64), nullable=True),
    Column("details", Text, nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("user_id", ID, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # A UUIDv7: ids sort as they were made, so a user's feed pages by id.
    Column("id", ID, nullable=False),
    Column("room_id", ID, ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False),
    # The message is read from its row (its text sealed there): never copied here.
    Column("message_id", ID, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("created_at", TIMESTAMP, nullable=False),
    Column("read", Boolean, nullable=False, server_default=false()),
    # A user's feed newest first, their unread count, their leaving a room: all walk
    # the user's own rows. Few indexes: an @room inserts a row per member.
    PrimaryKeyConstraint("user_id", "id"),
    # A message's deletion takes its notifications.
    Index(None, "message_id"),
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
