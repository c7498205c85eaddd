"""Connection fields of nested types: parse the cursor, call the service, wrap. The node type's
converter is passed in, so app/schema can call these without this module importing it back."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from app.resolvers.context import Info
from app.resolvers.pagination import connection, decode_cursor
from app.schema.pagination import Connection
from app.services import billing

T = TypeVar("T")


async def ledger_page(
    info: Info, *, provider_id: uuid.UUID, first: int, after: str | None, convert: Callable[[Any], T]
) -> Connection[T]:
    key = decode_cursor(after)
    page = await billing.list_ledger(
        info.context.db, actor=await info.context.actor(), provider_id=provider_id, first=first, after=key
    )
    return connection(page, convert, after=key)
