"""Input rules shared by every edge (REST, WebSocket, CLI), as plain functions."""

from __future__ import annotations

import re

from parley.errors import InvalidInput, TooLarge

USERNAME_RE = re.compile(r"^[a-z0-9_.\-]{3,32}$")
CLIENT_MSG_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
MAX_ROOM_NAME = 80
MAX_TOPIC = 500
MAX_DISPLAY_NAME = 64
MAX_EMOJI_CHARS = 32


# Unicode's Cc (C0, DEL, C1) and Cs (surrogates) categories, as character classes:
# one regex scan instead of a Python loop over every character of every message.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROLS_BUT_NEWLINES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


# Characters that change how a name displays without showing themselves: bidi
# embeddings, overrides and isolates (U+202A-202E, U+2066-2069, U+061C, U+200E/F:
# "gnp.exe" shown as "exe.png"), zero-width space, word joiners and invisible
# operators (U+200B, U+2060-2064), the BOM (U+FEFF), U+180E. Zero-width (non-)joiners
# U+200C/200D stay: scripts such as Persian and emoji sequences need them.
_INVISIBLE = re.compile(
    "[\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


# The same rules as JSON Schema ``pattern``s, for the OpenAPI document: regexes
# that mean the same in Python and ECMA-262 (escapes only, no ``\s``: the two
# disagree on U+FEFF). ``_SPACE`` is exactly what ``str.strip()`` removes.
_C = r"\x00-\x1f\x7f-\x9f"
_C_BUT_NEWLINES = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_I = r"\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
_SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NAME_PATTERN = f"^[^{_C}{_I}]*[^{_SPACE}{_C}{_I}][^{_C}{_I}]*$"
"""A room or display name: something visible, no controls, no invisible characters."""
TOPIC_PATTERN = f"^[^{_C_BUT_NEWLINES}]*$"
BODY_PATTERN = f"^[^{_C_BUT_NEWLINES}]*[^{_SPACE}{_C_BUT_NEWLINES}][^{_C_BUT_NEWLINES}]*$"
"""A message body: not blank, no controls but tabs and newlines."""
EMOJI_PATTERN = f"^[^{_SPACE}{_C}/]{{1,{MAX_EMOJI_CHARS}}}$"
"""A reaction; no ``/`` either, since it travels as a path segment."""
CLIENT_MSG_ID_PATTERN = CLIENT_MSG_ID_RE.pattern


def _visible(text: str, field: str) -> None:
    if _INVISIBLE.search(text) is not None:
        raise InvalidInput(f"{field} contains invisible or direction-changing characters")


def _no_controls(text: str, field: str, *, allow_newlines: bool) -> None:
    controls = _CONTROLS_BUT_NEWLINES if allow_newlines else _CONTROLS
    if controls.search(text) is not None:
        raise InvalidInput(f"{field} contains control characters")


def check_username(username: str) -> str:
    if not USERNAME_RE.fullmatch(username):
        raise InvalidInput("username: 3 to 32 of a-z 0-9 _ . -", code="invalid_username")
    return username


def check_password(password: str) -> str:
    if not 8 <= len(password) <= 256:
        raise InvalidInput("password: 8 to 256 characters", code="invalid_password")
    return password


def check_display_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_DISPLAY_NAME:
        raise InvalidInput(f"display_name: 1 to {MAX_DISPLAY_NAME} characters")
    _no_controls(name, "display_name", allow_newlines=False)
    _visible(name, "display_name")
    return name


def check_room_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_ROOM_NAME:
        raise InvalidInput(f"name: 1 to {MAX_ROOM_NAME} characters")
    _no_controls(name, "name", allow_newlines=False)
    _visible(name, "name")
    return name


def check_topic(topic: str) -> str:
    if len(topic) > MAX_TOPIC:
        raise InvalidInput(f"topic: at most {MAX_TOPIC} characters")
    _no_controls(topic, "topic", allow_newlines=True)
    return topic


def check_body(body: str, max_bytes: int) -> str:
    """1 to ``max_bytes`` UTF-8 bytes, not blank, no control characters but newlines
    and tabs."""
    size = len(body.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise TooLarge(f"body: at most {max_bytes} bytes of UTF-8")
    if not body.strip():
        raise InvalidInput("body must not be empty", code="empty_body")
    _no_controls(body, "body", allow_newlines=True)
    return body


def check_client_msg_id(value: str | None) -> str | None:
    if value is not None and not CLIENT_MSG_ID_RE.fullmatch(value):
        raise InvalidInput("client_msg_id: 1 to 64 of A-Z a-z 0-9 _ . : -")
    return value


def check_emoji(emoji: str) -> str:
    """A reaction: a short run of non-space symbols (an emoji or a :shortcode:)."""
    if not 1 <= len(emoji) <= MAX_EMOJI_CHARS or any(c.isspace() for c in emoji):
        raise InvalidInput(f"emoji: 1 to {MAX_EMOJI_CHARS} characters, no spaces")
    _no_controls(emoji, "emoji", allow_newlines=False)
    return emoji


UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_UUID_RE = re.compile(UUID_PATTERN)
MIN_GROUP_OTHERS = 2
MAX_GROUP_OTHERS = 9


def check_id(value: str, field: str) -> str:
    """An id as the API writes them (a UUID, lower case): anything else names
    nothing, and is refused before it reaches the store."""
    if not _UUID_RE.match(value):
        raise InvalidInput(f"{field}: not an id")
    return value.lower()


def check_group_others(user_ids: list[str], actor: str) -> list[str]:
    """The other people of a group direct room: 2 to 9 distinct ids, the caller not
    among them (the caller is always in it)."""
    if not MIN_GROUP_OTHERS <= len(user_ids) <= MAX_GROUP_OTHERS:
        raise InvalidInput(
            f"user_ids: {MIN_GROUP_OTHERS} to {MAX_GROUP_OTHERS} other users "
            "(a group direct room holds 3 to 10 people)"
        )
    ids = [check_id(u, "user_ids") for u in user_ids]
    if len(set(ids)) != len(ids):
        raise InvalidInput("user_ids: each user once")
    if actor in ids:
        raise InvalidInput("user_ids: the other users, not yourself")
    return ids
