"""Access and refresh tokens.

Access tokens are short-lived JWTs (HS256, PyJWT) signed with a key generated on first
start and kept in the data dir with 0600 permissions (or given by
``PARLEY_SECRET_KEY`` so that every node of a cluster shares it). Decoding pins the
algorithm and requires ``exp``, ``iat``, ``iss``, ``aud`` and ``sub``.

Refresh tokens are 256-bit random strings; only their SHA-256 is stored. Each use
rotates them, and presenting a used one revokes its whole family (reuse detection,
per the OAuth 2.0 Security BCP, section 4.14).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from parley.domain.models import UserId, format_ts, new_id
from parley.errors import Unauthorized
from parley.ports import Store

ALGORITHM = "HS256"
AUDIENCE = "parley"
VERIFIED_CACHE = 4096
"""Access tokens remembered as verified: every REST request and every WebSocket
connect checks one, a reconnecting client presents the same one again, and a
PyJWT decode costs ~50 µs here against a dict lookup's fraction of one."""


def load_or_create_key(path: Path) -> bytes:
    """The signing key in ``path``, created (0600) on first start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex())
        return key


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int

    def public(self) -> dict[str, object]:
        """The OAuth2 token response."""
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


class Tokens:
    """Issues and checks tokens for one deployment."""

    def __init__(
        self,
        store: Store,
        key: bytes,
        *,
        issuer: str,
        access_ttl: int = 900,
        refresh_ttl: int = 30 * 86400,
    ) -> None:
        self._store = store
        self._key = key
        self._kid = hashlib.sha256(key).hexdigest()[:16]
        self._issuer = issuer
        self._access_ttl = access_ttl
        self._refresh_ttl = refresh_ttl
        self._verified: dict[str, tuple[UserId, float]] = {}
        """token → (user, exp): what a successful decode found, good until exp."""

    def access_token(self, user_id: UserId) -> str:
        now = int(time.time())
        claims = {
            "sub": user_id,
            "iat": now,
            "exp": now + self._access_ttl,
            "iss": self._issuer,
            "aud": AUDIENCE,
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self._kid})

    def verify_access(self, token: str) -> UserId:
        """The user of a valid access token; ``Unauthorized`` otherwise. A token
        decoded before is not decoded again until it expires: nothing else about it
        can change (it is signed, and the key is fixed for the process's life)."""
        verified = self._verified.get(token)
        if verified is not None:
            if time.time() < verified[1]:
                return verified[0]
            self._verified.pop(token, None)
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("access token expired", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid access token", code="invalid_token") from exc
        sub = claims.get("sub")
        exp = claims.get("exp")
        if not isinstance(sub, str) or not sub or not isinstance(exp, int | float):
            raise Unauthorized("invalid access token", code="invalid_token")
        cache = self._verified
        if len(cache) >= VERIFIED_CACHE:
            cache.pop(next(iter(cache), ""), None)  # the oldest entry
        cache[token] = (UserId(sub), float(exp))
        return UserId(sub)

    async def issue(self, user_id: UserId, family_id: str | None = None) -> TokenPair:
        """A new access token and a new refresh token (in a new or existing family)."""
        refresh = secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + timedelta(seconds=self._refresh_ttl)
        await self._store.add_refresh_token(
            hash_refresh_token(refresh), user_id, family_id or new_id(), format_ts(expires)
        )
        return TokenPair(self.access_token(user_id), refresh, self._access_ttl)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate: consume this refresh token and issue a new pair in its family."""
        grant = await self._store.use_refresh_token(
            hash_refresh_token(refresh_token), format_ts(datetime.now(UTC))
        )
        return await self.issue(grant.user_id, grant.family_id)

    async def revoke(self, refresh_token: str) -> None:
        await self._store.revoke_refresh_family(hash_refresh_token(refresh_token))
