"""Provider users: a buyer's people. An operator invites one by email (a random single-use token,
kept hashed, expiring; the link goes out through the notification outbox). Accepting sets the
password and starts a TOTP enrollment (a second single-use token, short-lived); the account
signs in only after the first code from the authenticator is confirmed, which also completes the
first sign-in. Then login, verifyMfa, lockout and logout work as for admins (app/services/auth.py).

Disabling or removing a user revokes its access tokens and stops the API keys it made; the caller
announces the returned hashes (credentials.announce_revoked) so every API process forgets them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.db import Database
from app.errors import Conflict, NotFound, Unauthenticated
from app.models.audit import AuditAction
from app.models.auth import AccessToken, AdminUser, ApiKey, ProviderInvite, ProviderUser
from app.models.base import utcnow
from app.models.billing import Provider
from app.models.distribution import Notification, Template
from app.services import _guards
from app.services.audit import Actor, record
from app.services.auth import accept_code, issue_access_token, provider_principal, register_failure
from app.services.dispatch import Dispatcher
from app.services.pages import Page, PageKey, keyset_page
from app.services.principals import require_operator
from app.services.tokens import (
    ENROLLMENT_PREFIX,
    INVITE_PREFIX,
    IssuedToken,
    check_code_format,
    check_rate_limit,
    digest,
    hash_password,
    new_secret,
    new_totp_secret,
    provisioning_uri,
)
from app.settings import Settings


@dataclass(frozen=True)
class Invited:
    user: ProviderUser
    invite_url: str  # holds the token: for the CLI to print; the API does not return it
    expires_at: datetime


@dataclass(frozen=True)
class Enrollment:
    token: str
    provisioning_uri: str
    expires_at: datetime


@dataclass(frozen=True)
class Changed:
    user: ProviderUser
    revoked_hashes: list[str]  # to announce: the user's access tokens and the keys it made


def invite_url(settings: Settings, token: str) -> str:
    """A fragment: browsers never send it to a server, so the token stays out of access logs."""
    return f"{settings.portal_url}#invite={token}"


async def invite(
    db: Database,
    *,
    actor: Actor,
    provider_id: uuid.UUID,
    email: str,
    settings: Settings,
    dispatcher: Dispatcher | None = None,
) -> Invited:
    """A new user, or a new invite for one who has not finished enrolling (earlier invites stop)."""
    require_operator(actor, "inviting provider users")
    clean_email = _guards.email(email)
    token = new_secret(INVITE_PREFIX)
    now = utcnow()
    expires_at = now + timedelta(hours=settings.invite_ttl_hours)
    async with db.begin() as session:
        provider = await session.get(Provider, provider_id)
        if provider is None:
            raise NotFound("provider", provider_id)
        if await session.scalar(sa.select(col(AdminUser.id)).where(col(AdminUser.email) == clean_email)):
            raise Conflict(f"{clean_email} is an admin's email", field="email")
        user = (
            await session.execute(
                select(ProviderUser).where(ProviderUser.email == clean_email).with_for_update()
            )
        ).scalar_one_or_none()
        if user is None:
            user = ProviderUser(provider_id=provider_id, email=clean_email, invited_by=actor.id)
            session.add(user)
            await session.flush()
        elif user.provider_id != provider_id:
            raise Conflict(f"{clean_email} is already a user of another provider", field="email")
        elif user.enrolled_at is not None:
            raise Conflict(f"{clean_email} already has an account", field="email")
        elif user.disabled_at is not None:
            raise Conflict(f"{clean_email} is disabled: enable it before inviting it again", field="email")
        else:  # a new invite replaces the ones not used yet
            await session.execute(
                sa.update(ProviderInvite)
                .where(
                    col(ProviderInvite.provider_user_id) == user.id,
                    col(ProviderInvite.used_at).is_(None),
                    col(ProviderInvite.expires_at) > now,
                )
                .values(expires_at=now)
            )
        session.add(ProviderInvite(provider_user_id=user.id, token_hash=digest(token), expires_at=expires_at))
        url = invite_url(settings, token)
        session.add(
            Notification(
                template=Template.PROVIDER_INVITE,
                recipient=clean_email,
                variables={
                    "provider_name": provider.name,
                    "invite_url": url,
                    "expires_at": expires_at.strftime("%Y-%m-%d %H:%M UTC"),
                },
            )
        )
        record(
            session,
            actor,
            AuditAction.PROVIDER_USER_INVITED,
            entity_type="provider_user",
            entity_id=user.id,
            provider_id=provider_id,
            email=clean_email,
        )
    if dispatcher is not None:
        await dispatcher.notify()  # after the commit; a lost wake leaves it to the sweep
    return Invited(user=user, invite_url=url, expires_at=expires_at)


async def accept_invite(
    db: Database, redis: Redis, *, token: str, password: str, client: str, settings: Settings
) -> Enrollment:
    """Spends the invite, sets the password and starts the TOTP enrollment."""
    await check_rate_limit(redis, keys=[f"invite:ip:{client}"], limit=settings.auth_rate_limit_per_minute)
    password_hash = await hash_password(password)  # a bad password writes nothing, spends nothing
    now = utcnow()
    enrollment = new_secret(ENROLLMENT_PREFIX)
    expires_at = now + timedelta(minutes=settings.enrollment_ttl_minutes)
    async with db.begin() as session:
        found = (
            await session.execute(
                select(ProviderInvite)
                .where(ProviderInvite.token_hash == digest(token or ""))
                .with_for_update()
            )
        ).scalar_one_or_none()
        if found is None:
            raise Unauthenticated("unknown invite: check the link, or ask for a new invite")
        if found.used_at is not None:
            raise Unauthenticated("this invite was already used: sign in, or ask for a new invite")
        if found.expires_at <= now:
            raise Unauthenticated("this invite has expired: ask for a new one")
        user = await session.get(ProviderUser, found.provider_user_id, with_for_update=True)
        assert user is not None
        if user.disabled_at is not None:
            raise Unauthenticated("this account is disabled: ask your LeadWheel operator")
        found.used_at = now
        user.password_hash = password_hash
        user.totp_secret = new_totp_secret()
        user.last_totp_step = None
        user.enrollment_token_hash = digest(enrollment)
        user.enrollment_expires_at = expires_at
        record(
            session,
            provider_principal(user),
            AuditAction.PROVIDER_USER_INVITE_ACCEPTED,
            entity_type="provider_user",
            entity_id=user.id,
        )
    uri = provisioning_uri(user.totp_secret, email=user.email, issuer=settings.totp_issuer)
    return Enrollment(token=enrollment, provisioning_uri=uri, expires_at=expires_at)


async def confirm_enrollment(
    db: Database, redis: Redis, *, token: str, code: str, client: str, settings: Settings
) -> IssuedToken:
    """The first code from the authenticator: the account is enrolled and signed in."""
    await check_rate_limit(redis, keys=[f"enroll:ip:{client}"], limit=settings.auth_rate_limit_per_minute)
    code = check_code_format(code)
    now = utcnow()
    async with db.begin() as session:
        user = (
            await session.execute(
                select(ProviderUser)
                .where(ProviderUser.enrollment_token_hash == digest(token or ""))
                .with_for_update()
            )
        ).scalar_one_or_none()
        if user is None or user.enrollment_expires_at is None or user.totp_secret is None:
            raise Unauthenticated("unknown or finished enrollment: sign in, or ask for a new invite")
        if user.enrollment_expires_at <= now:
            raise Unauthenticated("this enrollment has expired: ask for a new invite")
        if user.disabled_at is not None:
            raise Unauthenticated("this account is disabled: ask your LeadWheel operator")
        await check_rate_limit(redis, keys=[f"mfa:acct:{user.id}"], limit=settings.auth_rate_limit_per_minute)
        failure = accept_code(user, code, now)
        if failure is None:
            user.enrolled_at = now
            user.enrollment_token_hash = None
            user.enrollment_expires_at = None
            record(
                session,
                provider_principal(user),
                AuditAction.PROVIDER_USER_ENROLLED,
                entity_type="provider_user",
                entity_id=user.id,
            )
            return issue_access_token(session, user, settings=settings, now=now)
        user_id = user.id
    await register_failure(db, ProviderUser, user_id, settings)
    raise Unauthenticated(failure)


async def find_provider(db: Database, *, actor: Actor, ref: str) -> uuid.UUID:
    """A provider by id, email or exact name (the CLI's PROVIDER argument)."""
    require_operator(actor, "inviting provider users")
    try:
        return uuid.UUID(ref)
    except ValueError:
        pass
    async with db.read() as session:
        found = (
            (
                await session.execute(
                    sa.select(col(Provider.id)).where(
                        sa.or_(col(Provider.email) == ref.strip().lower(), col(Provider.name) == ref.strip())
                    )
                )
            )
            .scalars()
            .all()
        )
    if not found:
        raise NotFound("provider", ref)
    if len(found) > 1:
        raise Conflict(f"{len(found)} providers are named {ref!r}: give its id")
    return found[0]


async def list_provider_users(
    db: Database, *, actor: Actor, provider_id: uuid.UUID | None, first: int, after: PageKey | None
) -> Page[ProviderUser]:
    require_operator(actor, "listing provider users")
    stmt = select(ProviderUser)
    if provider_id is not None:
        stmt = stmt.where(ProviderUser.provider_id == provider_id)
    async with db.read() as session:
        return await keyset_page(session, stmt, ProviderUser, first=first, after=after)


async def _credentials_of(session: AsyncSession, user_id: uuid.UUID) -> list[str]:
    """Hashes of the user's live access tokens and of the keys it made."""
    now = utcnow()
    tokens = await session.execute(
        sa.select(col(AccessToken.token_hash)).where(
            col(AccessToken.provider_user_id) == user_id,
            col(AccessToken.revoked_at).is_(None),
            col(AccessToken.expires_at) > now,
        )
    )
    keys = await session.execute(
        sa.select(col(ApiKey.key_hash)).where(
            col(ApiKey.provider_user_id) == user_id, col(ApiKey.revoked_at).is_(None)
        )
    )
    return [*tokens.scalars(), *keys.scalars()]


async def set_disabled(db: Database, *, actor: Actor, user_id: uuid.UUID, disabled: bool) -> Changed:
    """Disabling revokes the user's access tokens (enabled again, it signs in anew) and stops the
    keys it made for as long as it is disabled."""
    require_operator(actor, "disabling or enabling provider users")
    now = utcnow()
    async with db.begin() as session:
        user = await session.get(ProviderUser, user_id, with_for_update=True)
        if user is None:
            raise NotFound("provider user", user_id)
        revoked: list[str] = []
        if disabled and user.disabled_at is None:
            revoked = await _credentials_of(session, user_id)
            user.disabled_at = now
            await session.execute(
                sa.update(AccessToken)
                .where(col(AccessToken.provider_user_id) == user_id, col(AccessToken.revoked_at).is_(None))
                .values(revoked_at=now)
            )
            record(
                session,
                actor,
                AuditAction.PROVIDER_USER_DISABLED,
                entity_type="provider_user",
                entity_id=user.id,
            )
        elif not disabled and user.disabled_at is not None:
            user.disabled_at = None
            user.failed_attempts = 0
            user.locked_until = None
            record(
                session,
                actor,
                AuditAction.PROVIDER_USER_ENABLED,
                entity_type="provider_user",
                entity_id=user.id,
            )
    return Changed(user=user, revoked_hashes=revoked)


async def remove(db: Database, *, actor: Actor, user_id: uuid.UUID) -> Changed:
    """Deletes the user, its tokens, challenges and invites; the keys it made are revoked (they
    stay listed, as every revoked key does)."""
    require_operator(actor, "removing provider users")
    now = utcnow()
    async with db.begin() as session:
        user = await session.get(ProviderUser, user_id, with_for_update=True)
        if user is None:
            raise NotFound("provider user", user_id)
        revoked = await _credentials_of(session, user_id)
        await session.execute(
            sa.update(ApiKey)
            .where(col(ApiKey.provider_user_id) == user_id, col(ApiKey.revoked_at).is_(None))
            .values(revoked_at=now)
        )
        await session.delete(user)  # tokens, challenges and invites go with it (ON DELETE CASCADE)
        record(
            session,
            actor,
            AuditAction.PROVIDER_USER_REMOVED,
            entity_type="provider_user",
            entity_id=user.id,
            email=user.email,
            provider_id=user.provider_id,
        )
    return Changed(user=user, revoked_hashes=revoked)
