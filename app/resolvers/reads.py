"""Reads behind fields of nested types that are more than a loader: connections (parse the cursor,
call the service, wrap) and a schedule's live state. Node converters are passed in, so app/schema
can call these without this module importing it back."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from app.resolvers.context import Info
from app.resolvers.pagination import connection, decode_cursor
from app.schema.pagination import Connection
from app.services import billing, subscriptions

T = TypeVar("T")


async def ledger_page(
    info: Info, *, provider_id: uuid.UUID, first: int, after: str | None, convert: Callable[[Any], T]
) -> Connection[T]:
    key = decode_cursor(after)
    page = await billing.list_ledger(
        info.context.db, actor=await info.context.actor(), provider_id=provider_id, first=first, after=key
    )
    return connection(page, convert, after=key)


async def open_state(info: Info, provider_id: uuid.UUID, schedule: object) -> tuple[bool, datetime | None]:
    """Whether a schedule (stored JSON) of this provider is open now, and when that next changes."""
    provider = await info.context.loaders.provider.load(provider_id)
    timezone = provider.timezone if provider is not None else "UTC"
    return subscriptions.open_state(schedule, timezone, datetime.now(UTC))  # type: ignore[arg-type]
