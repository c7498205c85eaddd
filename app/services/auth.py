"""Admin users with argon2id passwords and TOTP MFA, access tokens, scoped API keys, and the
Redis rate limit for login attempts. Tokens and keys are random and stored as SHA-256 hashes (no
slow hash needed for 256-bit secrets); passwords use argon2id in a thread (~100 ms)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from redis.asyncio import Redis
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from app.db import Database, retry_on_disconnect
from app.errors import Conflict, InvalidInput, MfaRequired, NotFound, RateLimited, Unauthenticated
from app.models.audit import ActorType, AuditAction
from app.models.auth import AccessToken, AdminUser, ApiKey, MfaChallenge
from app.models.base import utcnow
from app.services import _guards
from app.services.audit import Actor, record
from app.services.credentials import CredentialCache, Verified
from app.settings import Settings

SCOPES = frozenset({"read", "leads:write", "distribution:write", "admin"})
ACCESS_PREFIX, CHALLENGE_PREFIX, KEY_PREFIX = "lwa_", "lwc_", "lwk_"
TOTP_STEP_SECONDS = 30

_hasher = PasswordHasher()
# verified against when the email is unknown, so both failures take the same time
_DUMMY_HASH = _hasher.hash("not-a-password")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class CreatedAdmin:
    admin: AdminUser
    provisioning_uri: str


@dataclass(frozen=True)
class CreatedApiKey:
    key: ApiKey
    secret: str  # shown once


async def create_admin(
    db: Database, *, email: str, password: str, settings: Settings, totp_secret: str | None = None
) -> CreatedAdmin:
    clean_email = _guards.email(email)
    if len(password) < 12:
        raise InvalidInput("password must have at least 12 characters", field="password")
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    secret = totp_secret or pyotp.random_base32()
    admin = AdminUser(email=clean_email, password_hash=password_hash, totp_secret=secret)
    try:
        async with db.begin() as session:
            session.add(admin)
    except IntegrityError as exc:
        raise Conflict(f"an admin with email {clean_email} already exists", field="email") from exc
    uri = pyotp.TOTP(secret).provisioning_uri(name=clean_email, issuer_name=settings.totp_issuer)
    return CreatedAdmin(admin=admin, provisioning_uri=uri)


async def check_rate_limit(redis: Redis, *, keys: list[str], limit: int) -> None:
    """Fixed one-minute windows in Redis, shared by every API process."""
    window = int(utcnow().timestamp()) // 60
    pipe = redis.pipeline()
    for key in keys:
        name = f"lw:rl:{key}:{window}"
        pipe.incr(name)
        pipe.expire(name, 120)
    counts = (await pipe.execute())[::2]
    if any(int(c) > limit for c in counts):
        raise RateLimited(f"too many attempts: at most {limit} a minute; wait a minute and retry")


def _lock_message(admin: AdminUser) -> str:
    assert admin.locked_until is not None
    return f"account locked after repeated failures until {admin.locked_until.isoformat()}"


async def _register_failure(db: Database, admin_id: uuid.UUID, settings: Settings) -> None:
    async with db.begin() as session:
        admin = await session.get(AdminUser, admin_id, with_for_update=True)
        assert admin is not None
        admin.failed_attempts += 1
        if admin.failed_attempts >= settings.lockout_after_failures:
            admin.locked_until = utcnow() + timedelta(minutes=settings.lockout_minutes)
            admin.failed_attempts = 0
        record(
            session,
            Actor(ActorType.USER, admin.id),
            AuditAction.ADMIN_LOGIN_FAILED,
            entity_type="admin_user",
            entity_id=admin.id,
            locked=admin.locked_until is not None and admin.locked_until > utcnow(),
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
        admin = (
            await session.execute(select(AdminUser).where(AdminUser.email == clean_email))
        ).scalar_one_or_none()
    stored = admin.password_hash if admin else _DUMMY_HASH
    try:
        await asyncio.to_thread(_hasher.verify, stored, password or "")
        matched = admin is not None
    except (VerifyMismatchError, InvalidHashError):
        matched = False
    if admin is not None and admin.locked_until and admin.locked_until > utcnow():
        raise RateLimited(_lock_message(admin))
    if not matched or admin is None:
        if admin is not None:
            await _register_failure(db, admin.id, settings)
        raise Unauthenticated("email or password is wrong")
    secret = CHALLENGE_PREFIX + secrets.token_urlsafe(24)
    expires_at = utcnow() + timedelta(seconds=settings.mfa_challenge_ttl_seconds)
    async with db.begin() as session:
        session.add(MfaChallenge(admin_id=admin.id, token_hash=digest(secret), expires_at=expires_at))
    return IssuedToken(token=secret, expires_at=expires_at)


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The TOTP time step (current ±1, RFC 6238) whose code is `code`, if any."""
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // TOTP_STEP_SECONDS
    for step in (current - 1, current, current + 1):
        if secrets.compare_digest(totp.at(step * TOTP_STEP_SECONDS), code):
            return step
    return None


async def verify_mfa(
    db: Database, redis: Redis, *, challenge: str, code: str, client: str, settings: Settings
) -> IssuedToken:
    await check_rate_limit(redis, keys=[f"mfa:ip:{client}"], limit=settings.auth_rate_limit_per_minute)
    code = (code or "").strip()
    if not (len(code) == 6 and code.isdigit()):
        raise InvalidInput("code must be the 6 digits your authenticator shows", field="code")
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
        admin = await session.get(AdminUser, found.admin_id, with_for_update=True)
        assert admin is not None
        await check_rate_limit(
            redis, keys=[f"mfa:acct:{admin.id}"], limit=settings.auth_rate_limit_per_minute
        )
        if admin.locked_until and admin.locked_until > now:
            raise RateLimited(_lock_message(admin))
        step = _matching_step(admin.totp_secret, code, now)
        replayed = step is not None and admin.last_totp_step is not None and step <= admin.last_totp_step
        if step is not None and not replayed:
            found.used_at = now
            admin.last_totp_step = step
            admin.failed_attempts = 0
            secret = ACCESS_PREFIX + secrets.token_urlsafe(32)
            expires_at = now + timedelta(minutes=settings.access_token_ttl_minutes)
            session.add(AccessToken(admin_id=admin.id, token_hash=digest(secret), expires_at=expires_at))
            record(
                session,
                Actor(ActorType.USER, admin.id),
                AuditAction.ADMIN_LOGIN,
                entity_type="admin_user",
                entity_id=admin.id,
            )
            return IssuedToken(token=secret, expires_at=expires_at)
    await _register_failure(db, found.admin_id, settings)
    if replayed:
        raise Unauthenticated("this code was already used: wait for the next one")
    raise Unauthenticated("the code is wrong or expired")


async def logout(db: Database, *, actor: Actor, token: str) -> bool:
    async with db.begin() as session:
        result = await session.execute(
            sa.update(AccessToken)
            .where(col(AccessToken.token_hash) == digest(token), col(AccessToken.revoked_at).is_(None))
            .values(revoked_at=utcnow())
        )
        record(session, actor, AuditAction.ADMIN_LOGOUT, entity_type="admin_user", entity_id=actor.id)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def authenticate(db: Database, token: str, cache: CredentialCache | None = None) -> Actor:
    """Maps a bearer secret to its actor: from `cache` when this process verified it moments ago,
    else one statement. Raises Unauthenticated / MfaRequired with a message saying what to do."""
    now = utcnow()
    token_hash = digest(token)
    verified = cache.get(token_hash) if cache is not None else None
    if verified is None:
        verified = await _verify(db, token, token_hash)
        if cache is not None:
            cache.put(token_hash, verified)
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


@retry_on_disconnect
async def _verify(db: Database, token: str, token_hash: str) -> Verified:
    now = utcnow()
    if token.startswith(ACCESS_PREFIX):
        async with db.connect() as conn:  # Core, autocommit: one round trip, no session
            row = (
                await conn.execute(
                    sa.select(
                        col(AdminUser.id),
                        col(AdminUser.email),
                        col(AccessToken.expires_at),
                        col(AccessToken.revoked_at),
                    )
                    .join(AccessToken, col(AccessToken.admin_id) == col(AdminUser.id))
                    .where(col(AccessToken.token_hash) == token_hash)
                )
            ).one_or_none()
        if row is None:
            raise Unauthenticated("unknown access token: log in again")
        if row.revoked_at is not None:
            raise Unauthenticated("this access token was revoked (logged out): log in again")
        actor = Actor(ActorType.USER, row.id, label=row.email, scopes=SCOPES)
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
        keys = ApiKey.__table__  # type: ignore[attr-defined]
        async with db.connect() as conn:
            key = (await conn.execute(sa.select(keys).where(keys.c.key_hash == token_hash))).one_or_none()
        if key is None:
            raise Unauthenticated("unknown API key")
        if key.revoked_at is not None:
            raise Unauthenticated("this API key was revoked")
        actor = Actor(ActorType.API_KEY, key.id, label=key.name, scopes=frozenset(key.scopes))
        return Verified(actor, expires_at=None, last_used_at=key.last_used_at)
    raise Unauthenticated("unrecognised credentials: send 'Authorization: Bearer <token or API key>'")


async def create_api_key(db: Database, *, actor: Actor, name: str, scopes: list[str]) -> CreatedApiKey:
    clean_name = _guards.text(name, field="name", max_length=100)
    wanted = sorted(set(scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if not wanted or unknown:
        raise InvalidInput(
            f"scopes must be a non-empty subset of {sorted(SCOPES)}"
            + (f"; unknown: {unknown}" if unknown else ""),
            field="scopes",
        )
    prefix = secrets.token_hex(4)
    secret = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        name=clean_name,
        prefix=f"{KEY_PREFIX}{prefix}",
        key_hash=digest(secret),
        scopes=wanted,
        created_by=actor.id,
    )
    async with db.begin() as session:
        session.add(key)
        await session.flush()
        record(
            session,
            actor,
            AuditAction.API_KEY_CREATED,
            entity_type="api_key",
            entity_id=key.id,
            name=clean_name,
            scopes=wanted,
        )
    return CreatedApiKey(key=key, secret=secret)


async def revoke_api_key(db: Database, *, actor: Actor, key_id: uuid.UUID) -> ApiKey:
    async with db.begin() as session:
        key = await session.get(ApiKey, key_id, with_for_update=True)
        if key is None:
            raise NotFound("API key", key_id)
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            record(session, actor, AuditAction.API_KEY_REVOKED, entity_type="api_key", entity_id=key.id)
    return key


async def get_admin(db: Database, admin_id: uuid.UUID) -> AdminUser:
    async with db.read() as session:
        admin = await session.get(AdminUser, admin_id)
    if admin is None:
        raise NotFound("admin user", admin_id)
    return admin
