"""Accounts for tests that are not about signing in: provider users and access tokens written
straight to the database (the sign-in flows have their own tests, tests/api/test_provider_accounts.py)."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta

import pyotp

from app.db import Database
from app.models.auth import AccessToken, ProviderUser
from app.models.base import utcnow
from app.services.tokens import ACCESS_PREFIX, digest, new_secret

_counter = itertools.count(1)


async def make_provider_user(
    db: Database, provider_id: uuid.UUID, *, email: str | None = None, enrolled: bool = True
) -> ProviderUser:
    user = ProviderUser(
        provider_id=provider_id,
        email=email or f"buyer{next(_counter)}-{uuid.uuid4().hex[:6]}@example.test",
        password_hash=None,
        totp_secret=pyotp.random_base32(),
        enrolled_at=utcnow() if enrolled else None,
    )
    async with db.begin() as session:
        session.add(user)
    return user


async def access_token(
    db: Database, *, admin_id: uuid.UUID | None = None, provider_user_id: uuid.UUID | None = None
) -> str:
    """A valid access token, as verifyMfa would issue it."""
    secret = new_secret(ACCESS_PREFIX)
    async with db.begin() as session:
        session.add(
            AccessToken(
                admin_id=admin_id,
                provider_user_id=provider_user_id,
                token_hash=digest(secret),
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
    return secret
