"""Keyset pagination over (created_at, id), newest first: stable under inserts, no OFFSET scans."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidInput

M = TypeVar("M")
MAX_PAGE = 100


@dataclass(frozen=True)
class PageKey:
    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True)
class Page(Generic[M]):
    items: list[M]
    has_next: bool


def check_first(first: int) -> int:
    if first < 1 or first > MAX_PAGE:
        raise InvalidInput(f"first must be between 1 and {MAX_PAGE}", field="first")
    return first


async def keyset_page(
    session: AsyncSession, stmt: sa.Select[Any], model: Any, *, first: int, after: PageKey | None
) -> Page[Any]:
    """`stmt` selects the model (items are instances) or its table (items are rows: cheaper to build
    for a page that is only read)."""
    check_first(first)
    created, ident = model.created_at, model.id
    if after is not None:
        stmt = stmt.where(sa.tuple_(created, ident) < sa.tuple_(after.created_at, after.id))
    result = await session.execute(stmt.order_by(created.desc(), ident.desc()).limit(first + 1))
    selects_model = stmt.column_descriptions[0]["type"] is model
    rows = result.scalars().all() if selects_model else result.all()
    return Page(items=list(rows[:first]), has_next=len(rows) > first)
