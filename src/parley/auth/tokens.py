"""Access and refresh tokens.

Access tokens are short-lived JWTs (HS256, PyJWT) signed with a key generated on first
start and kept in the data dir with 0600 permissions (or given by
``PARLEY_SECRET_KEY`` so that every node of a cluster shares it). Decoding pins the
algorithm and requires ``exp``, ``iat``, ``iss``, ``aud`` and ``sub``. An access token
issued with a refresh token carries ``sid``, the refresh family's id: the session it
belongs to, so that revoking the family can end that session's live connections.

Refresh tokens are 256-bit random strings; only their SHA-256 is stored. Each use
rotates them, and presenting a used one revokes its whole family (reuse detection,
per the OAuth 2.0 Security BCP, section 4.14).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from parley.domain.models import UserId, format_ts, new_id
from parley.errors import Unauthorized
from parley.ports import RefreshGrant, Store

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


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a valid access token says: its user, its expiry (Unix seconds), and
    its session (the refresh family it was issued with; None for a token without)."""

    user_id: UserId
    expires_at: float
    sid: str | None


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
        self._verified: dict[str, AccessClaims] = {}
        """token → what a successful decode found, good until its expiry."""
        self._ended: dict[str, float] = {}
        """session → until when its access tokens are refused: they are stateless, so
        a revoked session's tokens stay valid until they expire unless this node
        remembers the revocation (told by the bus, ``Hub.end_sessions``)."""

    def end_sessions(self, sids: Iterable[str]) -> None:
        """Refuse the access tokens of these sessions from now until they expire."""
        now = time.time()
        ended = self._ended
        for sid, until in list(ended.items()):
            if until <= now:
                del ended[sid]
        for sid in sids:
            ended[sid] = now + self._access_ttl

    @property
    def access_ttl(self) -> int:
        return self._access_ttl

    def access_token(self, user_id: UserId, sid: str | None = None) -> str:
        now = int(time.time())
        claims: dict[str, object] = {
            "sub": user_id,
            "iat": now,
            "exp": now + self._access_ttl,
            "iss": self._issuer,
            "aud": AUDIENCE,
            "jti": secrets.token_hex(8),
        }
        if sid is not None:
            claims["sid"] = sid
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self._kid})

    def verify_access(self, token: str) -> UserId:
        """The user of a valid access token; ``Unauthorized`` otherwise."""
        return self.verify_claims(token).user_id

    def verify_claims(self, token: str) -> AccessClaims:
        """The claims of a valid access token; ``Unauthorized`` otherwise. A token
        decoded before is not decoded again until it expires: nothing else about it
        can change (it is signed, and the key is fixed for the process's life)."""
        verified = self._verified.get(token)
        if verified is not None:
            if time.time() < verified.expires_at:
                if verified.sid is not None and verified.sid in self._ended:
                    raise Unauthorized("this session has ended", code="invalid_token")
                return verified
            self._verified.pop(token, None)
            raise Unauthorized("access token expired", code="token_expired")
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
        sid = claims.get("sid")
        if not isinstance(sub, str) or not sub or not isinstance(exp, int | float):
            raise Unauthorized("invalid access token", code="invalid_token")
        if sid is not None and not isinstance(sid, str):
            raise Unauthorized("invalid access token", code="invalid_token")
        cache = self._verified
        if len(cache) >= VERIFIED_CACHE:
            cache.pop(next(iter(cache), ""), None)  # the oldest entry
        found = cache[token] = AccessClaims(UserId(sub), float(exp), sid)
        if sid is not None and sid in self._ended:
            raise Unauthorized("this session has ended", code="invalid_token")
        return found

    async def issue(self, user_id: UserId, family_id: str | None = None) -> TokenPair:
        """A new access token and a new refresh token (in a new or existing family);
        the access token's ``sid`` is the family."""
        refresh = secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + timedelta(seconds=self._refresh_ttl)
        family = family_id or new_id()
        await self._store.add_refresh_token(
            hash_refresh_token(refresh), user_id, family, format_ts(expires)
        )
        return TokenPair(self.access_token(user_id, family), refresh, self._access_ttl)

    async def refresh(self, refresh_token: str, *, ip: str | None = None) -> TokenPair:
        """Rotate: consume this refresh token and issue a new pair in its family
        (``ip``: who presented it, for the audit log should it be a reuse)."""
        grant = await self._store.use_refresh_token(
            hash_refresh_token(refresh_token), format_ts(datetime.now(UTC)), ip=ip
        )
        return await self.issue(grant.user_id, grant.family_id)

    async def revoke(self, refresh_token: str) -> RefreshGrant | None:
        """Revoke the token's family: its user and family, or None for an unknown token."""
        return await self._store.revoke_refresh_family(hash_refresh_token(refresh_token))
