"""Argon2id password hashing (argon2-cffi), at OWASP's parameters by default.

Hashing is CPU-bound (~20-40 ms), so it runs in a worker thread to keep the event
loop responsive; logins are rate-limited by the gateway.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class Passwords:
    """Hash and verify passwords; ``needs_rehash`` follows parameter upgrades."""

    def __init__(self, *, time_cost: int = 2, memory_kib: int = 19456, parallelism: int = 1):
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        # Verifying against this keeps unknown usernames as slow as wrong passwords.
        self._dummy = self._hasher.hash("parley-timing-equaliser")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if ``password`` matches; constant-ish time whether or not a user exists."""
        target = password_hash or self._dummy
        try:
            ok = await asyncio.to_thread(self._hasher.verify, target, password)
        except (VerificationError, InvalidHashError):
            return False
        return bool(ok) and password_hash is not None
