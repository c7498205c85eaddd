"""Signing in, for admin users and provider users alike: password, then a TOTP code, then an access
token; lockout after repeated failures; logout; and `authenticate`, which maps a bearer secret to
its principal. A provider user's principal carries `provider_id` and the provider scopes only
(app/services/principals.py). API keys are app/services/api_keys.py, provider users' invites and
enrollment app/services/provider_users.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.db import Database, retry_on_disconnect
from app.errors import Conflict, MfaRequired, NotFound, RateLimited, Unauthenticated
from app.models.audit import ActorType, AuditAction
from app.models.auth import AccessToken, AdminUser, ApiKey, MfaChallenge, ProviderUser
from app.models.base import utcnow
from app.services import _guards
from app.services.api_keys import CreatedApiKey, create_api_key, revoke_api_key
from app.services.audit import Actor, record
from app.services.credentials import CredentialCache, Verified
from app.services.tokens import (
    ACCESS_PREFIX,
    CHALLENGE_PREFIX,
    KEY_PREFIX,
    PROVIDER_SCOPES,
    SCOPES,
    IssuedToken,
    check_code_format,
    check_rate_limit,
    digest,
    hash_password,
    matching_step,
    new_secret,
    new_totp_secret,
    password_matches,
    provisioning_uri,
)
from app.settings import Settings

__all__ = [
    "SCOPES",
    "CreatedAdmin",
    "CreatedApiKey",
    "IssuedToken",
    "authenticate",
    "check_rate_limit",
    "create_admin",
    "create_api_key",
    "digest",
    "get_admin",
    "login",
    "logout",
    "revoke_api_key",
    "verify_mfa",
]

Account = AdminUser | ProviderUser


@dataclass(frozen=True)
class CreatedAdmin:
    admin: AdminUser
    provisioning_uri: str


def provider_principal(user: ProviderUser) -> Actor:
    return Actor(
        ActorType.USER, user.id, label=user.email, scopes=PROVIDER_SCOPES, provider_id=user.provider_id
    )


def _principal(account: Account) -> Actor:
    if isinstance(account, ProviderUser):
        return provider_principal(account)
    return Actor(ActorType.USER, account.id, label=account.email, scopes=SCOPES)


def _entity(account: Account) -> str:
    return "provider_user" if isinstance(account, ProviderUser) else "admin_user"


async def create_admin(
    db: Database, *, email: str, password: str, settings: Settings, totp_secret: str | None = None
) -> CreatedAdmin:
    clean_email = _guards.email(email)
    password_hash = await hash_password(password)
    secret = totp_secret or new_totp_secret()
    admin = AdminUser(email=clean_email, password_hash=password_hash, totp_secret=secret)
    try:
        async with db.begin() as session:
            # one email, one account: login finds an admin or a provider user, never both
            if await session.scalar(
                sa.select(col(ProviderUser.id)).where(col(ProviderUser.email) == clean_email)
            ):
                raise Conflict(f"a provider user has the email {clean_email}", field="email")
            session.add(admin)
    except IntegrityError as exc:
        raise Conflict(f"an admin with email {clean_email} already exists", field="email") from exc
    uri = provisioning_uri(secret, email=clean_email, issuer=settings.totp_issuer)
    return CreatedAdmin(admin=admin, provisioning_uri=uri)


async def _lock_account(
    session: AsyncSession, model: type[AdminUser] | type[ProviderUser], account_id: uuid.UUID
) -> Account:
    account = await session.get(model, account_id, with_for_update=True)
    assert account is not None
    return cast(Account, account)


def _lock_message(account: Account) -> str:
    assert account.locked_until is not None
    return f"account locked after repeated failures until {account.locked_until.isoformat()}"


async def register_failure(
    db: Database, model: type[AdminUser] | type[ProviderUser], account_id: uuid.UUID, settings: Settings
) -> None:
    async with db.begin() as session:
        account = await _lock_account(session, model, account_id)
        account.failed_attempts += 1
        if account.failed_attempts >= settings.lockout_after_failures:
            account.locked_until = utcnow() + timedelta(minutes=settings.lockout_minutes)
            account.failed_attempts = 0
        provider_user = isinstance(account, ProviderUser)
        record(
            session,
            _principal(account),
            AuditAction.PROVIDER_USER_LOGIN_FAILED if provider_user else AuditAction.ADMIN_LOGIN_FAILED,
            entity_type=_entity(account),
            entity_id=account.id,
            locked=account.locked_until is not None and account.locked_until > utcnow(),
        )


def check_usable(user: ProviderUser) -> None:
    """A provider user signs in only enabled and enrolled (a first TOTP code confirmed)."""
    if user.disabled_at is not None:
        raise Unauthenticated("this account is disabled: ask your LeadWheel operator")
    if user.enrolled_at is None:
        raise MfaRequired(
            "enrollment is not finished: confirm a code from your authenticator with confirmEnrollment "
            "(or ask for a new invite)"
        )


async def login(
    db: Database, redis: Redis, *, email: str, password: str, client: str, settings: Settings
) -> IssuedToken:
    """Password step: returns a short-lived single-use MFA challenge, never an access token."""
    clean_email = (email or "").strip().lower()
    await check_rate_limit(
        redis,
        keys=[f"login:acct:{clean_email}", f"login:ip:{client}"],
        limit=settings.auth_rate_limit_per_minute,
    )
    async with db.read() as session:
        account: Account | None = (
            await session.execute(select(AdminUser).where(AdminUser.email == clean_email))
        ).scalar_one_or_none()
        if account is None:
            account = (
                await session.execute(select(ProviderUser).where(ProviderUser.email == clean_email))
            ).scalar_one_or_none()
    matched = await password_matches(account.password_hash if account else None, password)
    if account is not None and account.locked_until and account.locked_until > utcnow():
        raise RateLimited(_lock_message(account))
    if not matched or account is None:
        if account is not None:
            await register_failure(db, type(account), account.id, settings)
        raise Unauthenticated("email or password is wrong")
    if isinstance(account, ProviderUser):
        check_usable(account)  # after the password: only its owner learns the account's state
    secret = new_secret(CHALLENGE_PREFIX)
    expires_at = utcnow() + timedelta(seconds=settings.mfa_challenge_ttl_seconds)
    provider_user = isinstance(account, ProviderUser)
    async with db.begin() as session:
        session.add(
            MfaChallenge(
                admin_id=None if provider_user else account.id,
                provider_user_id=account.id if provider_user else None,
                token_hash=digest(secret),
                expires_at=expires_at,
            )
        )
    return IssuedToken(token=secret, expires_at=expires_at)


def issue_access_token(
    session: AsyncSession, account: Account, *, settings: Settings, now: datetime
) -> IssuedToken:
    """In the transaction that verified the account's code: the token and its audit row."""
    provider_user = isinstance(account, ProviderUser)
    secret = new_secret(ACCESS_PREFIX)
    expires_at = now + timedelta(minutes=settings.access_token_ttl_minutes)
    session.add(
        AccessToken(
            admin_id=None if provider_user else account.id,
            provider_user_id=account.id if provider_user else None,
            token_hash=digest(secret),
            expires_at=expires_at,
        )
    )
    record(
        session,
        _principal(account),
        AuditAction.PROVIDER_USER_LOGIN if provider_user else AuditAction.ADMIN_LOGIN,
        entity_type=_entity(account),
        entity_id=account.id,
    )
    return IssuedToken(token=secret, expires_at=expires_at)


def accept_code(account: Account, code: str, now: datetime) -> str | None:
    """A TOTP code for an account's second factor (its row locked): on a valid, unused code the
    account records its step and clears its failures and None is returned; else why it failed (the
    caller registers the failure after its transaction). A locked account is RATE_LIMITED."""
    if account.locked_until and account.locked_until > now:
        raise RateLimited(_lock_message(account))
    assert account.totp_secret is not None
    step = matching_step(account.totp_secret, code, now)
    if step is None:
        return "the code is wrong or expired: check the authenticator's clock"
    if account.last_totp_step is not None and step <= account.last_totp_step:
        return "this code was already used: wait for the next one"
    account.last_totp_step = step
    account.failed_attempts = 0
    return None


async def verify_mfa(
    db: Database, redis: Redis, *, challenge: str, code: str, client: str, settings: Settings
) -> IssuedToken:
    await check_rate_limit(redis, keys=[f"mfa:ip:{client}"], limit=settings.auth_rate_limit_per_minute)
    code = check_code_format(code)
    now = utcnow()
    async with db.begin() as session:
        found = (
            await session.execute(
                select(MfaChallenge)
                .where(MfaChallenge.token_hash == digest(challenge or ""))
                .with_for_update()
            )
        ).scalar_one_or_none()
        if found is None or found.used_at is not None or found.expires_at <= now:
            raise Unauthenticated("the MFA challenge is unknown, used or expired: log in again")
        model: type[AdminUser] | type[ProviderUser] = AdminUser if found.admin_id else ProviderUser
        account_id = found.admin_id or found.provider_user_id
        assert account_id is not None  # CHECK: exactly one owner
        account = await _lock_account(session, model, account_id)
        assert account.totp_secret is not None  # a challenge exists only for an enrolled account
        await check_rate_limit(
            redis, keys=[f"mfa:acct:{account.id}"], limit=settings.auth_rate_limit_per_minute
        )
        if isinstance(account, ProviderUser):
            check_usable(account)  # disabled since its login
        failure = accept_code(account, code, now)
        if failure is None:
            found.used_at = now
            return issue_access_token(session, account, settings=settings, now=now)
    await register_failure(db, model, account_id, settings)
    raise Unauthenticated(failure)


async def logout(db: Database, *, actor: Actor, token: str) -> bool:
    provider_user = actor.provider_id is not None
    async with db.begin() as session:
        result = await session.execute(
            sa.update(AccessToken)
            .where(col(AccessToken.token_hash) == digest(token), col(AccessToken.revoked_at).is_(None))
            .values(revoked_at=utcnow())
        )
        record(
            session,
            actor,
            AuditAction.PROVIDER_USER_LOGOUT if provider_user else AuditAction.ADMIN_LOGOUT,
            entity_type="provider_user" if provider_user else "admin_user",
            entity_id=actor.id,
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def authenticate(db: Database, token: str, cache: CredentialCache | None = None) -> Actor:
    """Maps a bearer secret to its actor: from `cache` when this process verified it moments ago,
    else one statement. Raises Unauthenticated / MfaRequired with a message saying what to do."""
    now = utcnow()
    token_hash = digest(token)
    verified = cache.get(token_hash) if cache is not None else None
    if verified is None:
        epoch = cache.epoch if cache is not None else 0
        verified = await _verify(db, token, token_hash)
        if cache is not None:
            cache.put(token_hash, verified, since=epoch)
    if verified.expires_at is not None and verified.expires_at <= now:
        if cache is not None:
            cache.forget(token_hash)
        raise Unauthenticated("this access token has expired: log in again")
    actor = verified.actor
    if actor.type is ActorType.API_KEY and (
        verified.last_used_at is None or now - verified.last_used_at > timedelta(minutes=1)
    ):
        await _record_key_use(db, actor.id, now)  # at most once a minute per key and process
        verified.last_used_at = now
    return actor


@retry_on_disconnect
async def _record_key_use(db: Database, key_id: uuid.UUID | None, now: datetime) -> None:
    async with db.connect() as conn:
        await conn.execute(sa.update(ApiKey).where(col(ApiKey.id) == key_id).values(last_used_at=now))


_tokens = AccessToken.__table__  # type: ignore[attr-defined]
_admins = AdminUser.__table__  # type: ignore[attr-defined]
_users = ProviderUser.__table__  # type: ignore[attr-defined]
_keys = ApiKey.__table__  # type: ignore[attr-defined]

# one round trip: the token and whichever account owns it
_ACCESS_TOKEN = sa.select(
    _tokens.c.expires_at,
    _tokens.c.revoked_at,
    _admins.c.id.label("admin_id"),
    _admins.c.email.label("admin_email"),
    _users.c.id.label("user_id"),
    _users.c.email.label("user_email"),
    _users.c.provider_id,
    _users.c.disabled_at,
).select_from(
    _tokens.outerjoin(_admins, _admins.c.id == _tokens.c.admin_id).outerjoin(
        _users, _users.c.id == _tokens.c.provider_user_id
    )
)
# the key and, for one a provider user made, whether that user is disabled
_API_KEY = sa.select(_keys, _users.c.disabled_at.label("maker_disabled_at")).select_from(
    _keys.outerjoin(_users, _users.c.id == _keys.c.provider_user_id)
)


@retry_on_disconnect
async def _verify(db: Database, token: str, token_hash: str) -> Verified:
    now = utcnow()
    if token.startswith(ACCESS_PREFIX):
        async with db.connect() as conn:  # Core, autocommit: one round trip, no session
            row = (await conn.execute(_ACCESS_TOKEN.where(_tokens.c.token_hash == token_hash))).one_or_none()
        if row is None:
            raise Unauthenticated("unknown access token: log in again")
        if row.revoked_at is not None:
            raise Unauthenticated("this access token was revoked (logged out): log in again")
        if row.admin_id is not None:
            actor = Actor(ActorType.USER, row.admin_id, label=row.admin_email, scopes=SCOPES)
        else:
            if row.disabled_at is not None:
                raise Unauthenticated("this account is disabled: ask your LeadWheel operator")
            actor = Actor(
                ActorType.USER,
                row.user_id,
                label=row.user_email,
                scopes=PROVIDER_SCOPES,
                provider_id=row.provider_id,
            )
        return Verified(actor, expires_at=row.expires_at, last_used_at=None)
    if token.startswith(CHALLENGE_PREFIX):
        async with db.read() as session:
            challenge = (
                await session.execute(select(MfaChallenge).where(MfaChallenge.token_hash == token_hash))
            ).scalar_one_or_none()
        if challenge is not None and challenge.used_at is None and challenge.expires_at > now:
            raise MfaRequired("complete verifyMfa with your authenticator code first")
        raise Unauthenticated("unknown or expired MFA challenge: log in again")
    if token.startswith(KEY_PREFIX):
        async with db.connect() as conn:
            key = (await conn.execute(_API_KEY.where(_keys.c.key_hash == token_hash))).one_or_none()
        if key is None:
            raise Unauthenticated("unknown API key")
        if key.revoked_at is not None:
            raise Unauthenticated("this API key was revoked")
        if key.maker_disabled_at is not None:
            raise Unauthenticated("the provider user who made this API key is disabled")
        actor = Actor(
            ActorType.API_KEY,
            key.id,
            label=key.name,
            scopes=frozenset(key.scopes),
            provider_id=key.provider_id,
        )
        return Verified(actor, expires_at=None, last_used_at=key.last_used_at)
    raise Unauthenticated("unrecognised credentials: send 'Authorization: Bearer <token or API key>'")


async def get_admin(db: Database, admin_id: uuid.UUID) -> AdminUser:
    async with db.read() as session:
        admin = await session.get(AdminUser, admin_id)
    if admin is None:
        raise NotFound("admin user", admin_id)
    return admin
