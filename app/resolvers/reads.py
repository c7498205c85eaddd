"""Reads behind fields of nested types that are more than a loader: connections (parse the cursor,
call the service, wrap) and a schedule's live state. Node converters are passed in, so app/schema
can call these without this module importing it back."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from app.resolvers.context import Info
from app.resolvers.pagination import connection, decode_cursor
from app.schema.pagination import Connection
from app.services import billing, subscriptions
from app.services.pages import Page

T = TypeVar("T")


async def page_of(
    info: Info,
    read: Callable[..., Awaitable[Page[Any]]],
    convert: Callable[[Any], T],
    *,
    after: str | None,
    prepare: Callable[[Sequence[Any]], Awaitable[None]] | None = None,
) -> Connection[T]:
    """A service's keyset page as a connection: the cursor parsed (a bad one is INVALID_INPUT before
    any read), the page read as the request's principal (`read(db, actor=…, after=…)`: a service's
    list function with its filters bound by functools.partial, which mypy checks), `prepare` given
    its items (prefetching what the selection reaches), then each item converted."""
    key = decode_cursor(after)
    page = await read(info.context.db, actor=await info.context.actor(), after=key)
    if prepare is not None:
        await prepare(page.items)
    return connection(page, convert, after=key)


async def ledger_page(
    info: Info, *, provider_id: uuid.UUID, first: int, after: str | None, convert: Callable[[Any], T]
) -> Connection[T]:
    return await page_of(
        info, partial(billing.list_ledger, provider_id=provider_id, first=first), convert, after=after
    )


async def _timezone(info: Info, provider_id: uuid.UUID) -> str:
    provider = await info.context.loaders.provider.load(provider_id)
    return provider.timezone if provider is not None else "UTC"


async def open_now(info: Info, provider_id: uuid.UUID, schedule: dict[str, Any] | None) -> bool:
    """Whether a stored schedule of this provider is open now, in its time zone."""
    return subscriptions.open_now(schedule, await _timezone(info, provider_id), datetime.now(UTC))


async def schedule_changes_at(
    info: Info, provider_id: uuid.UUID, schedule: dict[str, Any] | None
) -> datetime | None:
    """When a stored schedule of this provider next opens or closes (None: not within a week)."""
    return subscriptions.next_schedule_change(schedule, await _timezone(info, provider_id), datetime.now(UTC))
