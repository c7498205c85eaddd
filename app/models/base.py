"""Shared column helpers. The naming convention is set before any table so every constraint has a
name a migration can drop."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def uuid_pk() -> Any:
    return Field(
        default_factory=uuid.uuid4,
        primary_key=True,
        sa_column_kwargs={"server_default": sa.text("gen_random_uuid()")},
    )


def now_column() -> Any:
    return Field(
        default_factory=utcnow,
        sa_type=sa.DateTime(timezone=True),
        sa_column_kwargs={"server_default": sa.func.now(), "nullable": False},
    )


def timestamp() -> Any:
    """A nullable timestamptz."""
    return Field(default=None, sa_type=sa.DateTime(timezone=True))


def money(*, default: int | None = None) -> Any:
    kwargs: dict[str, Any] = {"nullable": False}
    if default is not None:
        kwargs["server_default"] = str(default)
        return Field(default=default, sa_type=sa.BigInteger, sa_column_kwargs=kwargs)
    return Field(sa_type=sa.BigInteger, sa_column_kwargs=kwargs)


def jsonb(default: str) -> Any:
    factory: Any = list if default == "[]" else dict
    return Field(
        default_factory=factory,
        sa_type=JSONB,
        sa_column_kwargs={"server_default": sa.text(f"'{default}'::jsonb"), "nullable": False},
    )


def enum_check(column: str, values: Iterable[StrEnum], name: str) -> sa.CheckConstraint:
    """Enums are stored as text with a CHECK: adding a value is a one-line migration."""
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=name)
