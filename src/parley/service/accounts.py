"""Registration and the OAuth2 grants (password, refresh_token) on top of the store."""

from __future__ import annotations

from parley.auth.passwords import Passwords
from parley.auth.tokens import TokenPair, Tokens
from parley.domain import validation
from parley.domain.models import User, UserId
from parley.errors import Forbidden, Unauthorized
from parley.ports import RefreshGrant, Store


class Accounts:
    """Users and their tokens."""

    def __init__(self, store: Store, passwords: Passwords, tokens: Tokens) -> None:
        self.store = store
        self.passwords = passwords
        self.tokens = tokens

    async def register(
        self, username: str, password: str, display_name: str | None = None, *, admin: bool = False
    ) -> User:
        validation.check_username(username)
        validation.check_password(password)
        name = validation.check_display_name(display_name or username)
        password_hash = await self.passwords.hash(password)
        return await self.store.create_user(username, password_hash, name, is_admin=admin)

    async def login(self, username: str, password: str) -> TokenPair:
        """The password grant; the same error for an unknown user and a bad password."""
        credentials = await self.store.get_credentials(username)
        ok = await self.passwords.verify(
            credentials.password_hash if credentials else None, password
        )
        if not ok or credentials is None:
            raise Unauthorized("invalid username or password", code="invalid_grant")
        return await self.tokens.issue(credentials.user.id)

    async def refresh(self, refresh_token: str) -> TokenPair:
        return await self.tokens.refresh(refresh_token)

    async def revoke(self, refresh_token: str) -> RefreshGrant | None:
        """Revoke a refresh token's family: whose session it was, if it was one."""
        return await self.tokens.revoke(refresh_token)

    async def change_password(
        self, user_id: UserId, current: str, new: str, keep_session: str | None
    ) -> list[str]:
        """Check ``current``, store ``new``, and revoke every refresh family of the
        user but ``keep_session`` (returned); a wrong ``current`` changes nothing."""
        user = await self.store.get_user(user_id)
        credentials = await self.store.get_credentials(user.username) if user else None
        ok = await self.passwords.verify(
            credentials.password_hash if credentials else None, current
        )
        if not ok:
            raise Forbidden("the current password is wrong", code="wrong_password")
        validation.check_password(new)
        return await self.store.set_password(user_id, await self.passwords.hash(new), keep_session)
