"""Search as the API offers it: read the query and the filters, ask the ``Store``, and
turn each hit into a result with its highlight and the page into a cursor.

Membership is the store's business, checked in the statement that searches: a room
the caller left a moment ago is not searched, and a ``room_id`` they are not a member
of finds nothing (no error: the answer says nothing of whether the room exists).

Cursor
    Opaque to clients: URL-safe base64 of ``[score, doc]``, the last hit's place in
    the order (best first, then newest). The next page is what sorts after it, so a
    page never repeats a message of an earlier one while the index is unchanged. New
    messages that rank above the cursor are not shown (a new search finds them); on
    SQLite ``bm25`` weighs terms by how rare they are in the whole index, so a
    message stored or deleted between pages can move others' scores a little, and a
    hit near the page's edge may then be skipped or shown twice (PostgreSQL's
    ``ts_rank`` depends on the message alone).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from datetime import UTC, datetime
from typing import Any

from parley.domain.models import UserId, format_ts
from parley.domain.search import SearchFilters, highlight, parse_query
from parley.errors import InvalidInput
from parley.ports import Store

__all__ = ["MAX_LIMIT", "search"]

MAX_LIMIT = 100


def encode_cursor(score: float, doc: int) -> str:
    raw = json.dumps([score, doc], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, int]:
    """``InvalidInput`` for anything ``encode_cursor`` did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, doc = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidInput("the cursor is malformed") from None
    if (
        not isinstance(score, int | float)
        or isinstance(score, bool)
        or not math.isfinite(score)
        or not isinstance(doc, int)
        or isinstance(doc, bool)
        or not 0 <= doc < 2**63
    ):
        raise InvalidInput("the cursor is malformed")
    return float(score), doc


def _stored_time(moment: datetime | None) -> str | None:
    """A date-time as the store writes one (UTC); one with no offset is taken as UTC."""
    if moment is None:
        return None
    try:
        return format_ts(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))
    except OverflowError:  # year 1 or 9999 with an offset that leaves the calendar
        return "0001-01-01T00:00:00.000000Z" if moment.year < 2 else "9999-12-31T23:59:59.999999Z"


async def search(
    store: Store,
    actor: UserId,
    q: str,
    *,
    room_id: str | None = None,
    sender_id: str | None = None,
    after: datetime | None = None,
    before: datetime | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    """``{"results": [{"message", "room_id", "highlight"}], "next_cursor"}``: one page,
    best first. ``next_cursor`` is None on the last page."""
    query = parse_query(q)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    filters = SearchFilters(
        room_id=room_id,
        sender_id=sender_id,
        after=_stored_time(after),
        before=_stored_time(before),
    )
    start = decode_cursor(cursor) if cursor is not None else None
    hits = await store.search(actor, query, filters, after=start, limit=limit + 1)
    page = hits[:limit]
    results = [
        {
            "message": hit.message.public(),
            "room_id": hit.message.room_id,
            "highlight": highlight(hit.message.body, query),
        }
        for hit in page
    ]
    more = len(hits) > limit
    return {
        "results": results,
        "next_cursor": encode_cursor(page[-1].score, page[-1].doc) if more else None,
    }
