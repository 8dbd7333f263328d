"""Registration, the OAuth2 grants (password, refresh_token) and what users do to
their own accounts, on top of the store. Logins, failed logins included, go to the
audit log."""

from __future__ import annotations

from parley.auth.passwords import Passwords
from parley.auth.tokens import TokenPair, Tokens
from parley.domain import validation
from parley.domain.admin import AuditAction, AuditRecord, RegistrationMode
from parley.domain.models import User, UserId
from parley.errors import Forbidden, NotFound, Unauthorized
from parley.ports import RefreshGrant, Store
from parley.service.admin import AdminService, hash_invite

MAX_AUDITED_USERNAME = 64


class Accounts:
    """Users and their tokens."""

    def __init__(
        self, store: Store, passwords: Passwords, tokens: Tokens, admin: AdminService | None = None
    ) -> None:
        self.store = store
        self.passwords = passwords
        self.tokens = tokens
        self.admin = admin or AdminService(store, passwords)

    async def register(
        self,
        username: str,
        password: str,
        display_name: str | None = None,
        *,
        admin: bool = False,
        invite: str | None = None,
    ) -> User:
        """Create an account if the registration mode lets one: ``closed`` refuses
        (403 ``registration_closed``), ``invite`` takes a valid ``invite`` code, whose
        use is counted with the account, in one transaction."""
        mode = await self.admin.registration()
        if mode is RegistrationMode.CLOSED:
            raise Forbidden("registration is closed on this server", code="registration_closed")
        if mode is RegistrationMode.INVITE and not invite:
            raise Forbidden("registration needs an invite on this server", code="invite_required")
        validation.check_username(username)
        validation.check_password(password)
        name = validation.check_display_name(display_name or username)
        password_hash = await self.passwords.hash(password)
        return await self.store.create_user(
            username,
            password_hash,
            name,
            is_admin=admin,
            invite_hash=hash_invite(invite) if mode is RegistrationMode.INVITE and invite else None,
        )

    async def login(self, username: str, password: str, ip: str | None = None) -> TokenPair:
        """The password grant; the same error for an unknown user and a bad password.
        A deactivated account is told so, but only with its right password."""
        credentials = await self.store.get_credentials(username)
        ok = await self.passwords.verify(
            credentials.password_hash if credentials else None, password
        )
        if not ok or credentials is None:
            await self.store.record_audit(
                AuditRecord(
                    AuditAction.LOGIN_FAILED,
                    target_user_id=credentials.user.id if credentials else None,
                    ip=ip,
                    details={"username": username[:MAX_AUDITED_USERNAME]},
                )
            )
            raise Unauthorized("invalid username or password", code="invalid_grant")
        user = credentials.user
        if user.deactivated_at is not None:
            raise Forbidden("this account is deactivated", code="account_deactivated")
        pair = await self.tokens.issue(user.id)
        await self.store.record_audit(
            AuditRecord(AuditAction.LOGIN, actor_id=user.id, target_user_id=user.id, ip=ip)
        )
        return pair

    async def refresh(self, refresh_token: str, ip: str | None = None) -> TokenPair:
        return await self.tokens.refresh(refresh_token, ip=ip)

    async def revoke(self, refresh_token: str) -> RefreshGrant | None:
        """Revoke a refresh token's family: whose session it was, if it was one."""
        return await self.tokens.revoke(refresh_token)

    async def _check_password(self, user_id: UserId, password: str) -> None:
        user = await self.store.get_user(user_id)
        credentials = await self.store.get_credentials(user.username) if user else None
        ok = await self.passwords.verify(
            credentials.password_hash if credentials else None, password
        )
        if not ok:
            raise Forbidden("the current password is wrong", code="wrong_password")

    async def change_password(
        self, user_id: UserId, current: str, new: str, keep_session: str | None
    ) -> list[str]:
        """Check ``current``, store ``new``, and revoke every refresh family of the
        user but ``keep_session`` (returned); a wrong ``current`` changes nothing."""
        await self._check_password(user_id, current)
        validation.check_password(new)
        return await self.store.set_password(user_id, await self.passwords.hash(new), keep_session)

    async def set_display_name(self, user_id: UserId, display_name: str) -> User:
        return await self.store.set_display_name(
            user_id, validation.check_display_name(display_name)
        )

    async def delete_account(
        self, user_id: UserId, password: str, ip: str | None = None
    ) -> list[str]:
        """Delete the caller's account, confirmed by its password: its messages stay,
        shown as from ``Deleted user``; its username is free again. The families
        whose sessions end."""
        await self._check_password(user_id, password)
        user = await self.store.get_user(user_id)
        if user is None:
            raise NotFound("user not found")
        record = AuditRecord(
            AuditAction.ACCOUNT_DELETED,
            actor_id=user_id,
            target_user_id=user_id,
            ip=ip,
            details={"username": user.username},
        )
        return await self.store.delete_account(user_id, record)
