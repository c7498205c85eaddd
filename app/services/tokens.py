"""The secrets of signing in, shared by admin and provider accounts: random tokens stored as
SHA-256 hashes (no slow hash needed for 256-bit secrets), argon2id passwords (in a thread, ~100 ms),
TOTP codes (RFC 6238, ±1 step), and the Redis rate limit of sign-in attempts."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from redis.asyncio import Redis

from app.errors import InvalidInput, RateLimited
from app.models.base import utcnow

# what an operator may hold (an admin user holds them all); what a provider principal may hold
SCOPES = frozenset({"read", "leads:write", "distribution:write", "admin"})
PROVIDER_SCOPES = frozenset({"provider:read", "provider:write"})

ACCESS_PREFIX, CHALLENGE_PREFIX, KEY_PREFIX = "lwa_", "lwc_", "lwk_"
INVITE_PREFIX, ENROLLMENT_PREFIX = "lwi_", "lwe_"
TOTP_STEP_SECONDS = 30
MIN_PASSWORD_LENGTH = 12

_hasher = PasswordHasher()
# verified against when the email is unknown, so both failures take the same time
_DUMMY_HASH = _hasher.hash("not-a-password")


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


async def hash_password(password: str) -> str:
    """Refuses a short password before anything is written."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_LENGTH} characters", field="password")
    return await asyncio.to_thread(_hasher.hash, password)


async def password_matches(stored: str | None, password: str) -> bool:
    """Always verifies a hash (a dummy one when there is none), so an unknown account and a wrong
    password take the same time."""
    try:
        await asyncio.to_thread(_hasher.verify, stored or _DUMMY_HASH, password or "")
    except (VerifyMismatchError, InvalidHashError):
        return False
    return stored is not None


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, *, email: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def check_code_format(code: str) -> str:
    code = (code or "").strip()
    if not (len(code) == 6 and code.isdigit()):
        raise InvalidInput("code must be the 6 digits your authenticator shows", field="code")
    return code


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The TOTP time step (current ±1, RFC 6238) whose code is `code`, if any."""
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // TOTP_STEP_SECONDS
    for step in (current - 1, current, current + 1):
        if secrets.compare_digest(totp.at(step * TOTP_STEP_SECONDS), code):
            return step
    return None


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
