"""Who may sign in. Admin users and provider users are separate tables: a provider user always
belongs to one provider (NOT NULL), so no row can be mistaken for an operator by a missing
value. Access tokens and MFA challenges name their owner in exactly one of two columns."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel

from app.models.base import now_column, timestamp, uuid_pk


class AdminUser(SQLModel, table=True):
    __tablename__ = "admin_users"

    id: uuid.UUID = uuid_pk()
    email: str = Field(sa_column_kwargs={"unique": True, "nullable": False})
    password_hash: str
    totp_secret: str
    # the last TOTP time step accepted: a code of that step or earlier is a replay
    last_totp_step: int | None = Field(default=None, sa_type=sa.BigInteger)
    failed_attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    locked_until: datetime | None = timestamp()
    created_at: datetime = now_column()


class ProviderUser(SQLModel, table=True):
    """A buyer's person. Invited by an operator; usable only once `enrolled_at` is set (a password
    chosen with the invite and a first TOTP code verified)."""

    __tablename__ = "provider_users"

    id: uuid.UUID = uuid_pk()
    provider_id: uuid.UUID = Field(foreign_key="providers.id", nullable=False, index=True)
    email: str = Field(sa_column_kwargs={"unique": True, "nullable": False})
    password_hash: str | None = None  # chosen when the invite is accepted
    totp_secret: str | None = None  # made when the invite is accepted, confirmed by a first code
    enrolled_at: datetime | None = timestamp()
    # the pending enrollment (acceptInvite -> confirmEnrollment): a single-use token, hashed
    enrollment_token_hash: str | None = Field(default=None, sa_column_kwargs={"unique": True})
    enrollment_expires_at: datetime | None = timestamp()
    last_totp_step: int | None = Field(default=None, sa_type=sa.BigInteger)
    failed_attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    locked_until: datetime | None = timestamp()
    disabled_at: datetime | None = timestamp()
    invited_by: uuid.UUID | None = None
    created_at: datetime = now_column()


class ProviderInvite(SQLModel, table=True):
    """Single use, expiring; only the token's hash is kept. A used or replaced invite stays, so a
    second use is told apart from a forged token."""

    __tablename__ = "provider_invites"

    id: uuid.UUID = uuid_pk()
    provider_user_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid(), sa.ForeignKey("provider_users.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    token_hash: str = Field(sa_column_kwargs={"unique": True, "nullable": False})
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    used_at: datetime | None = timestamp()
    created_at: datetime = now_column()


def _owner_column() -> Any:
    """The provider user owning a token or challenge (the admin_id column names an admin's)."""
    return Field(
        default=None,
        sa_column=sa.Column(
            sa.Uuid(), sa.ForeignKey("provider_users.id", ondelete="CASCADE"), nullable=True, index=True
        ),
    )


# exactly one owner: an admin user or a provider user
ONE_OWNER = "num_nonnulls(admin_id, provider_user_id) = 1"


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: uuid.UUID = uuid_pk()
    name: str
    # the key's first characters, shown in lists so a person can tell keys apart
    prefix: str
    key_hash: str = Field(sa_column_kwargs={"unique": True, "nullable": False})
    scopes: list[str] = Field(default_factory=list, sa_type=ARRAY(sa.Text))
    created_by: uuid.UUID | None = None
    # set: a provider principal's key, reaching only this provider (scopes provider:*)
    provider_id: uuid.UUID | None = Field(default=None, foreign_key="providers.id", index=True)
    # the provider user who made it: the key stops while that user is disabled
    provider_user_id: uuid.UUID | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.Uuid(), sa.ForeignKey("provider_users.id", ondelete="SET NULL"), nullable=True
        ),
    )
    last_used_at: datetime | None = timestamp()
    revoked_at: datetime | None = timestamp()
    created_at: datetime = now_column()


class MfaChallenge(SQLModel, table=True):
    """Issued by login after the password; single use, short-lived. A bearer holding only this
    gets MFA_REQUIRED, never data."""

    __tablename__ = "mfa_challenges"
    __table_args__ = (sa.CheckConstraint(ONE_OWNER, name="one_owner"),)

    id: uuid.UUID = uuid_pk()
    admin_id: uuid.UUID | None = Field(default=None, foreign_key="admin_users.id", index=True)
    provider_user_id: uuid.UUID | None = _owner_column()
    token_hash: str = Field(sa_column_kwargs={"unique": True, "nullable": False})
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    used_at: datetime | None = timestamp()
    created_at: datetime = now_column()


class AccessToken(SQLModel, table=True):
    __tablename__ = "access_tokens"
    __table_args__ = (sa.CheckConstraint(ONE_OWNER, name="one_owner"),)

    id: uuid.UUID = uuid_pk()
    admin_id: uuid.UUID | None = Field(default=None, foreign_key="admin_users.id", index=True)
    provider_user_id: uuid.UUID | None = _owner_column()
    token_hash: str = Field(sa_column_kwargs={"unique": True, "nullable": False})
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    revoked_at: datetime | None = timestamp()
    created_at: datetime = now_column()
