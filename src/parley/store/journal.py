"""The events a transaction stores: each encoded once (``_new_event``), inserted
(``_insert_events``) and, while the writer runs a batch on the connection, added to
the batch's journal (``_journal``), which the writer hands to the commit hook once the
batch committed. An operation whose SAVEPOINT rolls back cuts its events off again
(``writer._apply_one``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from parley.domain.models import Event, EventType, RoomId
from parley.protocol.codec import encode_event
from parley.store.crypto import _ring, seal_event
from parley.store.statements import _RAW_INSERT_EVENTS

_JOURNAL = "parley_stored_events"


def _new_event(
    room_id: str,
    seq: int,
    type_: EventType,
    created_at: str,
    actor_id: str | None,
    **fields: Any,
) -> Event:
    """Encode an event once: these bytes are stored and sent to every recipient."""
    raw = encode_event(room_id, seq, type_.value, created_at, actor_id, **fields)
    return Event(RoomId(room_id), seq, type_, raw)


def _insert_events(
    conn: Connection, new: Sequence[Event], message_ids: Sequence[str | None] = ()
) -> None:
    """Store events, each with the id of the message it carries (``message_ids``, in
    the same order; none given: no message), those that carry one sealed with the
    connection's key ring; when a batch is running on ``conn``, add them, plain (the
    fan-out's bytes), to its journal (for the commit hook) once they are written."""
    if new:
        ids = message_ids or [None] * len(new)
        ring = _ring(conn)
        rows = []
        for e, m in zip(new, ids, strict=True):
            key_id, data = (None, e.raw) if m is None else seal_event(ring, e.room_id, e.seq, e.raw)
            rows.append(
                {
                    "room_id": e.room_id,
                    "seq": e.seq,
                    "type": e.type.value,
                    "data": data,
                    "message_id": m,
                    "key_id": key_id,
                }
            )
        _RAW_INSERT_EVENTS.executemany(conn, rows)
        journal: list[Event] | None = conn.info.get(_JOURNAL)
        if journal is not None:
            journal.extend(new)


@contextlib.contextmanager
def _journal(conn: Connection) -> Iterator[list[Event]]:
    """The journal of the batch about to run on ``conn``: every event
    ``_insert_events`` stores until the block ends, in the order stored."""
    journal: list[Event] = []
    info = conn.info  # read once: a connection that failed may not give it again
    info[_JOURNAL] = journal
    try:
        yield journal
    finally:
        info.pop(_JOURNAL, None)
