from __future__ import annotations

import uuid
from datetime import datetime

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


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: uuid.UUID = uuid_pk()
    name: str
    # the key's first characters, shown in lists so a person can tell keys apart
    prefix: str
    key_hash: str = Field(sa_column_kwargs={"unique": True, "nullable": False})
    scopes: list[str] = Field(default_factory=list, sa_type=ARRAY(sa.Text))
    created_by: uuid.UUID | None = None
    last_used_at: datetime | None = timestamp()
    revoked_at: datetime | None = timestamp()
    created_at: datetime = now_column()


class MfaChallenge(SQLModel, table=True):
    """Issued by login after the password; single use, short-lived. A bearer holding only this
    gets MFA_REQUIRED, never data."""

    __tablename__ = "mfa_challenges"

    id: uuid.UUID = uuid_pk()
    admin_id: uuid.UUID = Field(foreign_key="admin_users.id", nullable=False, index=True)
    token_hash: str = Field(sa_column_kwargs={"unique": True, "nullable": False})
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    used_at: datetime | None = timestamp()
    created_at: datetime = now_column()


class AccessToken(SQLModel, table=True):
    __tablename__ = "access_tokens"

    id: uuid.UUID = uuid_pk()
    admin_id: uuid.UUID = Field(foreign_key="admin_users.id", nullable=False, index=True)
    token_hash: str = Field(sa_column_kwargs={"unique": True, "nullable": False})
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    revoked_at: datetime | None = timestamp()
    created_at: datetime = now_column()
