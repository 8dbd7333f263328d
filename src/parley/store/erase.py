"""What deleting or editing a message does to the copies of its text already stored.

A message's text is in its row and in the events that carried it
(``message.created``, then each ``message.edited``), which ``GET /rooms/{id}/events``,
resumes and exports serve for as long as the room exists. So the transaction that
deletes a message rewrites those events to the tombstone form (the same event, its
``message.body`` empty and ``message.deleted`` true), and the one that edits a
message rewrites them to the new text: no earlier version stays readable, through the
API or in the database.

What the database keeps of the old bytes
    SQLite runs with ``secure_delete`` (freed space is zeroed) and the writer
    checkpoints the WAL (``TRUNCATE``) after a commit that erased or re-sealed text
    (``_ERASED`` on the connection's ``info``) and once more at close, so the old text
    leaves the WAL and the database file's old pages too. PostgreSQL
    keeps the old row versions as dead tuples until ``VACUUM`` reclaims them (see
    docs/operations.md, "Data protection").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from parley.protocol.codec import dumps, loads
from parley.store.crypto import _ring, open_event, seal_event
from parley.store.statements import _REWRITE_EVENT, _TEXT_EVENTS

_ERASED = "parley_erased"


def _rewrite_text_events(
    conn: Connection,
    room_id: str,
    message_id: str,
    body: str,
    *,
    deleted: bool = False,
    mentions: Sequence[str] = (),
    mentions_room: bool = False,
) -> int:
    """Set the text of every stored event that carries ``message_id``'s text to
    ``body``, with the mentions parsed from it (and mark them ``deleted``); the
    number of events rewritten."""
    ring = _ring(conn)
    rewritten: list[dict[str, Any]] = []
    rows = conn.execute(_TEXT_EVENTS, {"room": room_id, "message": message_id}).all()
    for seq, stored, key_id in rows:
        event = loads(open_event(conn, room_id, seq, key_id, bytes(stored)))
        message = event["message"]
        message["body"] = body
        message["mentions"] = list(mentions)
        message["mentions_room"] = mentions_room
        if deleted:
            message["deleted"] = True
        new_key, data = seal_event(ring, room_id, seq, dumps(event))
        rewritten.append({"room": room_id, "seq_": seq, "data_": data, "key_id_": new_key})
    if rewritten:
        conn.execute(_REWRITE_EVENT, rewritten)
        conn.info[_ERASED] = True
    return len(rewritten)
