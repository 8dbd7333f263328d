"""The blind search index: keyed hashes of each message's terms, in order, never text.

Writing
    ``index_messages`` hashes the terms of ``parley.domain.search.terms`` with keyed
    BLAKE2b under the key ring's ``index_key`` (``parley.store.crypto``), keeps the
    first 64 bits as 16 hex digits, and inserts one ``search_docs`` row per
    message, in the transaction that stores it: sends in one ``executemany`` per batch,
    an edit deletes and re-inserts the row, a delete removes it. A message that is
    deleted is therefore never in the index, whatever reads it.

    SQLite: the row's ``tokens`` is the hashes joined by spaces, and triggers copy it
    into the FTS5 table ``search_fts`` (ascii tokenizer, positions kept), or remove it.
    PostgreSQL: ``tokens`` is a tsvector made from the hashes with their positions
    (``'h':1,5 'g':2``) under a GIN index.

Reading
    A query's clauses become FTS5 ``("h1 h2" AND "h3") NOT "h4"`` or a tsquery
    ``(h1 <-> h2) & h3 & !h4``; the hits' rooms (``search_docs.room_id``) are joined to
    the caller's memberships *in the same statement*, so a room left a moment ago is
    gone from the next search. Order: best first (FTS5 ``bm25``; PostgreSQL
    ``ts_rank``, negated so that lower is better in both), then newest first; only
    the page's rows are read from ``messages`` (and must not be deleted). The page's
    last ``(score, doc)`` is the cursor for the next.

No key ring (tests' plain stores): terms are hashed under a fixed key; the index then
hides nothing, like the plain text beside it. Changing the index key (turning
encryption on for such a database) needs ``parley admin search reindex --all``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from parley.domain.search import Clause, Query, SearchFilters, SearchHit, terms
from parley.errors import Undecryptable
from parley.store.crypto import _ring, open_body
from parley.store.rows import _MESSAGE_COLUMNS, _message
from parley.store.statements import _fold_reactions, _Raw

__all__ = ["index_messages", "reindex_message", "search", "unindex_message"]

_UNKEYED = b"parley search index: no key ring"
_HASHER = "parley_search_hasher"
_HASH_BYTES = 8
_REMEMBERED = 200_000
"""Terms whose hashes a connection keeps (~20 MB at most); then it starts again."""
_MAX_PG_POSITION = 16383
"""PostgreSQL keeps positions up to 16,383 (later ones are clamped to it)."""


class _Hasher:
    """Keyed BLAKE2b of terms (RFC 7693's keyed mode: a MAC, like HMAC but ~5x
    cheaper here, where a message hashes 10-40 terms), the first 64 bits in hex. Terms
    already hashed are remembered, up to ``_REMEMBERED``; then it starts over."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._known: dict[str, str] = {}

    def hash(self, term: str) -> str:
        found = self._known.get(term)
        if found is None:
            found = hashlib.blake2b(
                term.encode(), key=self.key, digest_size=_HASH_BYTES
            ).hexdigest()
            if len(self._known) >= _REMEMBERED:
                self._known.clear()
            self._known[term] = found
        return found


def _hasher(conn: Connection) -> _Hasher:
    """The connection's hasher for the ring's current index key (kept in ``info``)."""
    ring = _ring(conn)
    key = (ring.index_key if ring is not None else None) or _UNKEYED
    hasher: _Hasher | None = conn.info.get(_HASHER)
    if hasher is None or hasher.key != key:
        hasher = conn.info[_HASHER] = _Hasher(key)
    return hasher


def _tokens(conn: Connection, body: str) -> str | None:
    """The stored form of a body's hashed terms; None when it has none."""
    found = terms(body)
    if not found:
        return None
    hashes = [*map(_hasher(conn).hash, found)]
    if conn.dialect.name == "sqlite":
        return " ".join(hashes)
    positions: dict[str, list[str]] = {}
    for index, h in enumerate(hashes, 1):
        positions.setdefault(h, []).append(str(min(index, _MAX_PG_POSITION)))
    return " ".join(f"{h}:{','.join(p)}" for h, p in positions.items())


# Run on the driver's cursor (``_Raw``): the send path's statements skip SQLAlchemy's
# per-execution work.
_INSERT = {
    "sqlite": _Raw(
        text("INSERT INTO search_docs (message_id, room_id, tokens) VALUES (:m, :r, :t)")
    ),
    "postgresql": _Raw(
        text(
            "INSERT INTO search_docs (message_id, room_id, tokens) "
            "VALUES (:m, :r, CAST(:t AS tsvector))"
        )
    ),
}
_DELETE = text("DELETE FROM search_docs WHERE message_id = :m")


def index_messages(conn: Connection, bodies: Iterable[tuple[str, str, str]]) -> int:
    """Index ``(message_id, room_id, plain body)``, in the caller's transaction: one
    ``executemany``. The number of rows made (bodies with no terms make none)."""
    rows = [
        {"m": m, "r": r, "t": t} for m, r, body in bodies if (t := _tokens(conn, body)) is not None
    ]
    if rows:
        _INSERT[conn.dialect.name].executemany(conn, rows)
    return len(rows)


def unindex_message(conn: Connection, message_id: str) -> None:
    """Take a message out of the index (deleted, or about to be re-indexed)."""
    conn.execute(_DELETE, {"m": message_id})


def reindex_message(conn: Connection, room_id: str, message_id: str, body: str) -> None:
    """An edited message: found by its new text only."""
    unindex_message(conn, message_id)
    index_messages(conn, [(message_id, room_id, body)])


# queries


def _fts_phrase(hashes: Sequence[str]) -> str:
    return '"' + " ".join(hashes) + '"'


def _pg_phrase(hashes: Sequence[str]) -> str:
    quoted = [f"'{h}'" for h in hashes]
    return quoted[0] if len(quoted) == 1 else "(" + " <-> ".join(quoted) + ")"


def match_expression(conn: Connection, query: Query) -> str:
    """The query as FTS5 ``MATCH`` text or a PostgreSQL tsquery (hashes only)."""
    hasher = _hasher(conn)

    def hashed(clause: Clause) -> list[str]:
        return [hasher.hash(t) for t in clause.terms]

    included = [hashed(c) for c in query.clauses if not c.exclude]
    excluded = [hashed(c) for c in query.clauses if c.exclude]
    if conn.dialect.name == "sqlite":
        expr = "(" + " AND ".join(map(_fts_phrase, included)) + ")"
        return expr + "".join(f" NOT {_fts_phrase(h)}" for h in excluded)
    return " & ".join([*map(_pg_phrase, included), *(f"!{_pg_phrase(h)}" for h in excluded)])


# A message row as ``parley.store.rows`` reads it, then the hit's score and doc.
_COLUMNS = ", ".join(f"m.{column.name}" for column in _MESSAGE_COLUMNS)
_SCORE = len(_MESSAGE_COLUMNS)
# The hits are found, checked against the caller's membership, ranked and cut to a
# page on ``search_docs`` alone (its ``room_id``); only the page's rows are then read
# from ``messages`` (joining ``messages`` for every hit doubled the time of a common
# word). Filters on the sender or the time join ``messages`` for every hit.
_MEMBER_JOIN = (
    " JOIN members b ON b.room_id = d.room_id AND b.user_id = :user "
    "AND b.role IS NOT NULL AND NOT b.banned"
)
_FILTER_JOIN = " JOIN messages f ON f.id = d.message_id"
# Built from constants only (``"".join``: no query text comes from a caller).
_HITS = {
    "sqlite": (
        "SELECT search_fts.rank AS score, d.doc AS doc, d.message_id AS mid FROM search_fts "
        "JOIN search_docs d ON d.doc = search_fts.rowid",
        " WHERE search_fts MATCH :match",
    ),
    "postgresql": (
        "SELECT -ts_rank(d.tokens, q.q) AS score, d.doc AS doc, d.message_id AS mid "
        "FROM search_docs d CROSS JOIN (SELECT CAST(:match AS tsquery) AS q) q",
        " WHERE d.tokens @@ q.q",
    ),
}
_FILTERS = (
    ("room_id", "d.room_id = :room_id"),
    ("sender_id", "f.sender_id = :sender_id"),
    ("after", "f.created_at > :after"),
    ("before", "f.created_at < :before"),
)


@functools.cache
def _statement(dialect: str, filters: tuple[str, ...], cursor: bool) -> Any:
    select, where = _HITS[dialect]
    joins = _MEMBER_JOIN + (_FILTER_JOIN if set(filters) - {"room_id"} else "")
    where += "".join(f" AND {clause}" for name, clause in _FILTERS if name in filters)
    page = " WHERE x.score > :score OR (x.score = :score AND x.doc < :doc)" if cursor else ""
    order = " ORDER BY x.score, x.doc DESC LIMIT :n"
    hits = "".join(("SELECT * FROM (", select, joins, where, ") x", page, order))
    parts = ("SELECT ", _COLUMNS, ", h.score, h.doc FROM (", hits, ") h ")
    tail = "JOIN messages m ON m.id = h.mid WHERE NOT m.deleted ORDER BY h.score, h.doc DESC"
    return text("".join((*parts, tail)))


def search(
    conn: Connection,
    user_id: str,
    query: Query,
    filters: SearchFilters,
    *,
    after: tuple[float, int] | None,
    limit: int,
) -> list[SearchHit]:
    """A page of the messages ``query`` finds in ``user_id``'s rooms, best first,
    after the cursor ``after``; their current text opened, reactions folded."""
    params: dict[str, Any] = {
        "user": user_id,
        "match": match_expression(conn, query),
        "n": limit,
    }
    used = tuple(name for name, _ in _FILTERS if getattr(filters, name) is not None)
    params.update({name: getattr(filters, name) for name in used})
    if after is not None:
        params["score"], params["doc"] = after
    rows = conn.execute(_statement(conn.dialect.name, used, after is not None), params).all()
    found = _fold_reactions(conn, [_message(row, conn) for row in rows])
    return [
        SearchHit(message, float(row[_SCORE]), int(row[_SCORE + 1]))
        for message, row in zip(found, rows, strict=True)
    ]


_UNINDEXED_SQL = (
    "SELECT m.id, m.room_id, m.key_id, m.body FROM messages m "
    "LEFT JOIN search_docs d ON d.message_id = m.id "
    "WHERE d.doc IS NULL AND NOT m.deleted AND m.id > :after ORDER BY m.id LIMIT :n"
)
# PostgreSQL: another node's delete of a row read here waits for this commit, then
# removes the row this made (SQLite has one writer at a time).
_UNINDEXED = {
    "sqlite": text(_UNINDEXED_SQL),
    "postgresql": text(_UNINDEXED_SQL + " FOR UPDATE OF m"),
}
_CLEAR = text("DELETE FROM search_docs")


def index_page(conn: Connection, after: str, n: int) -> tuple[int, list[str], str | None]:
    """Index up to ``n`` messages not yet indexed with ids after ``after`` (run by the
    writer: a delete cannot slip between the read and the insert). The number indexed,
    the ids of rows no key opens (altered or moved: left out, not fatal), and the last
    id looked at (None: no more)."""
    rows = conn.execute(_UNINDEXED[conn.dialect.name], {"after": after, "n": n}).all()
    if not rows:
        return 0, [], None
    bodies: list[tuple[str, str, str]] = []
    unreadable: list[str] = []
    for message_id, room_id, key_id, stored in rows:
        try:
            body = open_body(conn, room_id, message_id, key_id, stored)
            bodies.append((message_id, room_id, body))
        except Undecryptable:
            unreadable.append(str(message_id))
    return index_messages(conn, bodies), unreadable, str(rows[-1][0])


def clear_index(conn: Connection) -> None:
    """Empty the index (before indexing everything again under a new key)."""
    conn.execute(_CLEAR)
