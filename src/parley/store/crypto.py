"""Encryption at rest: message text sealed with AES-256-GCM under data keys that the
master key wraps.

What is sealed
    ``messages.body`` (stored as base64 of nonce and ciphertext) and the whole
    ``events.data`` blob of every event that carries a message (``message_id`` set:
    ``message.created``, ``message.edited``, ``message.deleted``), each with the id of
    the key that sealed it in ``key_id``. The associated data binds a ciphertext to
    its place: ``messages|room|message id`` for a body, ``events|room|seq`` for an
    event, so a row copied onto another message fails to open (``Undecryptable``)
    instead of showing the wrong text. A NULL ``key_id`` is plain text, written
    before encryption at rest; the re-encryption pass seals it. Other events (room
    names, membership) and tombstones' empty bodies stay plain.

Keys
    The master key (32 bytes, from ``PARLEY_MASTER_KEY`` or a key file) never touches
    the database: it wraps the data keys in the ``keys`` table (AES-GCM, associated
    data ``keys|id``), so every node with the same master key reads the same ring. The
    highest id seals new writes. ``rotate`` adds a key; each node reloads the ring
    every ``key_check_interval`` seconds (and at once when a row names a key it does
    not know), then re-seals older rows page by page through the group-commit writer,
    between other writes: no downtime.

The search index key
    The blind search index (``parley.store.search``) hashes terms with keyed BLAKE2b
    under ``index_key``: HKDF-SHA256 of the *oldest* data key (id 1 on every database
    made since encryption at rest), info ``parley search index v1``. A term must hash
    the same way for as long as the index holds it, so the key cannot follow the
    current data key: ``keys rotate`` leaves it alone, and re-wrapping the data keys
    under a new master key would too (the data key's bytes do not change). A database
    opened with another master key does not start at all (``Undecryptable``), so no
    node ever searches with a different key and silently finds nothing.

Cost
    The hot path seals the body and the event once per send (two AES-GCM calls, ~3.5 µs
    each here with their nonce and associated data); the fan-out uses the plain event
    bytes made at commit. Only reads open what they read.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import bindparam, event, func, insert, select
from sqlalchemy.engine import Connection, Engine

from parley.domain.models import utc_now
from parley.errors import Undecryptable
from parley.store.schema import keys

__all__ = ["KeyRing", "load_master_key"]

log = logging.getLogger(__name__)

_NONCE = 12
_NONCE_MASK = (1 << 96) - 1
_INDEX_INFO = b"parley search index v1"
_KEY_RING = "parley_key_ring"
"""Where a connection keeps the store's ``KeyRing`` (``Connection.info``)."""

_KEY_ROWS = select(keys.c.id, keys.c.wrapped).order_by(keys.c.id)
_MAX_KEY_ID = select(func.max(keys.c.id))
_INSERT_KEY = insert(keys).values(
    id=bindparam("id_"), wrapped=bindparam("wrapped_"), created_at=bindparam("now")
)


def load_master_key(
    hex_key: str | None, key_file: Path | None, data_dir: Path | None
) -> tuple[bytes, bool]:
    """The master key: from ``hex_key``, else from ``key_file``, else from
    ``data_dir / "master.key"``, created (0600) when missing; and whether it was
    created just now. Raises ``ValueError`` for a key that is not 32 bytes of hex."""
    created = False
    if hex_key:
        text = hex_key
    elif key_file is not None:
        text = key_file.read_text()
    elif data_dir is not None:
        path = data_dir / "master.key"
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = secrets.token_bytes(32).hex()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            created = True
    else:
        raise ValueError("no master key: set PARLEY_MASTER_KEY or PARLEY_MASTER_KEY_FILE")
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ValueError("the master key must be 64 hex digits (32 bytes)") from None
    if len(key) != 32:
        raise ValueError("the master key must be 64 hex digits (32 bytes)")
    return key, created


class KeyRing:
    """The master key and the data keys it unwrapped; ``current`` seals new writes.

    Shared by the store's threads: keys are only ever added, and ``current`` set after
    its key is in place, so a reader never sees an id without its key."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self._master = AESGCM(master_key)
        self._keys: dict[int, AESGCM] = {}
        self.current: int | None = None
        self._index: tuple[int, bytes] | None = None
        # Nonces: a random 96-bit start, then one more per seal (NIST SP 800-38D
        # §8.2.1's deterministic construction). Unique within this ring; two rings
        # under one key collide only if their runs of nonces overlap, for random
        # starts ~2^-96 per seal: as safe as random nonces, and ~1 µs cheaper a seal
        # than os.urandom (two seals a send).
        self._nonces = itertools.count(int.from_bytes(os.urandom(_NONCE), "big"))

    @property
    def key_ids(self) -> list[int]:
        """The ids of the data keys loaded, oldest first."""
        return sorted(self._keys)

    def seal(self, data: bytes, aad: bytes) -> tuple[int, bytes]:
        """``data`` sealed under the current key: its id, and nonce + ciphertext."""
        key_id = self.current
        if key_id is None:
            raise Undecryptable("the key ring has no key: the store was not started")
        nonce = (next(self._nonces) & _NONCE_MASK).to_bytes(_NONCE, "big")
        return key_id, nonce + self._keys[key_id].encrypt(nonce, data, aad)

    def open(self, key_id: int, blob: bytes, aad: bytes) -> bytes:
        """Open what ``seal`` made; ``Undecryptable`` if the key is unknown or the
        blob was altered or moved (the associated data differs)."""
        key = self._keys.get(key_id)
        if key is None:
            raise Undecryptable(f"stored data names key {key_id}, which the key ring lacks")
        try:
            return key.decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except InvalidTag:
            raise Undecryptable(
                "stored data does not open under its key: altered, or moved to another row"
            ) from None

    @property
    def index_key(self) -> bytes | None:
        """The search index's hashing key (see the module's docstring); None before the
        first data key is loaded."""
        return None if self._index is None else self._index[1]

    def knows(self, key_id: int) -> bool:
        return key_id in self._keys

    def wrap(self, key_id: int, key: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._master.encrypt(nonce, key, b"keys|%d" % key_id)

    def add(self, key_id: int, wrapped: bytes) -> None:
        """Unwrap and add a data key (the newest becomes ``current``)."""
        if key_id in self._keys:
            return
        try:
            key = self._master.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], b"keys|%d" % key_id)
        except InvalidTag:
            raise Undecryptable(
                f"the master key does not open data key {key_id}: is it the wrong master key?"
            ) from None
        if self._index is None or key_id < self._index[0]:
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INDEX_INFO)
            self._index = (key_id, hkdf.derive(key))
        self._keys[key_id] = AESGCM(key)
        if self.current is None or key_id > self.current:
            self.current = key_id


# the key table


def load_keys(conn: Connection, ring: KeyRing) -> bool:
    """Add the keys stored in the ``keys`` table that ``ring`` lacks; True if
    ``current`` changed."""
    before = ring.current
    for key_id, wrapped in conn.execute(_KEY_ROWS).all():
        ring.add(int(key_id), bytes(wrapped))
    return ring.current != before


def add_key(conn: Connection, ring: KeyRing) -> int:
    """Store a new data key, wrapped, with the next id; it seals new writes from now
    (on other nodes once they reload). Run inside the caller's transaction."""
    last = conn.execute(_MAX_KEY_ID).scalar()
    key_id = int(last or 0) + 1
    wrapped = ring.wrap(key_id, AESGCM.generate_key(bit_length=256))
    conn.execute(_INSERT_KEY, {"id_": key_id, "wrapped_": wrapped, "now": utc_now()})
    load_keys(conn, ring)
    return key_id


# sealing and opening rows


def _ring(conn: Connection) -> KeyRing | None:
    ring: KeyRing | None = conn.info.get(_KEY_RING)
    return ring


def _ring_for(conn: Connection, key_id: int) -> KeyRing:
    """The connection's ring, reloaded when it lacks ``key_id`` (another node rotated)."""
    ring = _ring(conn)
    if ring is None:
        raise Undecryptable("the data is encrypted and this store has no key ring")
    if not ring.knows(key_id):
        load_keys(conn, ring)
    return ring


def _body_aad(room_id: str, message_id: str) -> bytes:
    return f"messages|{room_id}|{message_id}".encode()


def _event_aad(room_id: str, seq: int) -> bytes:
    return f"events|{room_id}|{seq}".encode()


def seal_body(
    ring: KeyRing | None, room_id: str, message_id: str, body: str
) -> tuple[int | None, str]:
    """A message body as stored: ``(key_id, base64)``, or ``(None, body)`` with no ring."""
    if ring is None:
        return None, body
    key_id, blob = ring.seal(body.encode(), _body_aad(room_id, message_id))
    return key_id, base64.b64encode(blob).decode("ascii")


def open_body(
    conn: Connection, room_id: str, message_id: str, key_id: int | None, stored: str
) -> str:
    if key_id is None:
        return stored
    try:
        blob = base64.b64decode(stored, validate=True)
    except (binascii.Error, ValueError):
        raise Undecryptable("a stored message body is not sealed data") from None
    return _ring_for(conn, key_id).open(key_id, blob, _body_aad(room_id, message_id)).decode()


def seal_event(
    ring: KeyRing | None, room_id: str, seq: int, data: bytes
) -> tuple[int | None, bytes]:
    """An event's data as stored: ``(key_id, sealed)``, or ``(None, data)`` with no ring."""
    if ring is None:
        return None, data
    return ring.seal(data, _event_aad(room_id, seq))


def open_event(
    conn: Connection, room_id: str, seq: int, key_id: int | None, stored: bytes
) -> bytes:
    if key_id is None:
        return stored
    return _ring_for(conn, key_id).open(key_id, stored, _event_aad(room_id, seq))


def reseal_bodies(
    conn: Connection, ring: KeyRing, rows: Sequence[tuple[str, str, int | None, str]]
) -> list[dict[str, object]]:
    """Parameters re-sealing ``(id, room_id, key_id, body)`` rows under the current key."""
    out: list[dict[str, object]] = []
    for message_id, room_id, key_id, stored in rows:
        body = open_body(conn, room_id, message_id, key_id, stored)
        new_id, sealed = seal_body(ring, room_id, message_id, body)
        out.append({"message": message_id, "key_id_": new_id, "body_": sealed})
    return out


def reseal_events(
    conn: Connection, ring: KeyRing, rows: Sequence[tuple[str, int, int | None, bytes]]
) -> list[dict[str, object]]:
    """Parameters re-sealing ``(room_id, seq, key_id, data)`` rows under the current key."""
    out: list[dict[str, object]] = []
    for room_id, seq, key_id, stored in rows:
        data = open_event(conn, room_id, seq, key_id, bytes(stored))
        new_id, sealed = seal_event(ring, room_id, seq, data)
        out.append({"room": room_id, "seq_": seq, "key_id_": new_id, "data_": sealed})
    return out


def attach(engine: Engine, ring: KeyRing | None) -> None:
    """Give every connection ``engine`` opens the ring (in ``Connection.info``), so
    that the statements' plain functions seal and open with it."""
    if ring is None:
        return

    def connected(_dbapi_connection: Any, record: Any) -> None:
        record.info[_KEY_RING] = ring

    event.listen(engine, "connect", connected)  # a pool event: no per-statement cost
