"""The one exception root of Parley, with a stable code on every error.

Domain code raises these; only the gateway maps them to HTTP statuses, WebSocket
``error`` frames and close codes (see ``parley.gateway.errors``)::

    ParleyError                  code
    ├── InvalidInput             invalid_input (and more specific codes)
    ├── Unauthorized             unauthorized, invalid_token, invalid_grant
    ├── Forbidden                forbidden, banned
    ├── NotFound                 not_found
    ├── Conflict                 conflict
    │   ├── UsernameTaken        username_taken
    │   └── VersionConflict      version_conflict
    ├── TooLarge                 too_large
    ├── RateLimited              rate_limited
    └── Unavailable              unavailable (a backend is down)
        └── Undecryptable        undecryptable (stored data no key opens)
"""

from __future__ import annotations


class ParleyError(Exception):
    """Base of every error Parley raises on purpose; ``code`` is part of the API."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(ParleyError):
    code = "invalid_input"


class Unauthorized(ParleyError):
    code = "unauthorized"


class Forbidden(ParleyError):
    code = "forbidden"


class NotFound(ParleyError):
    code = "not_found"


class Conflict(ParleyError):
    code = "conflict"


class UsernameTaken(Conflict):
    code = "username_taken"


class VersionConflict(Conflict):
    code = "version_conflict"

    def __init__(self, message: str, *, current_version: int) -> None:
        super().__init__(message)
        self.current_version = current_version


class TooLarge(ParleyError):
    code = "too_large"


class RateLimited(ParleyError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ParleyError):
    code = "unavailable"


class Undecryptable(Unavailable):
    """Stored data that no key of the key ring opens: the wrong master key, a key
    missing from the ``keys`` table, or a row moved or altered in the database."""

    code = "undecryptable"
