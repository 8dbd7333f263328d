"""The SDK's exceptions::

ClientError                  anything the SDK raises on purpose
├── ApiError                 the server answered with an error (status, code)
│   └── AuthError            401: no, bad or expired credentials
└── ConnectionLost           the live connection dropped (``send`` retries it)
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of the SDK's exceptions."""


class ApiError(ClientError):
    """An error answer: HTTP ``status`` (0 for a WebSocket ``error`` frame), the
    API's stable ``code`` and its ``message``."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message}" if status == 0 else f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class AuthError(ApiError):
    """Credentials were refused and could not be refreshed: log in again."""


class ConnectionLost(ClientError):
    """The WebSocket closed before an answer came."""
