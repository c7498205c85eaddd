"""Connection fields shared by Query and nested types: parse the cursor, call the service, wrap."""

from __future__ import annotations

import uuid

from app.resolvers.context import Info
from app.schema.pagination import Connection, connection, decode_cursor
from app.schema.types import LedgerEntry
from app.services import billing


async def ledger_page(
    info: Info, *, provider_id: uuid.UUID, first: int, after: str | None
) -> Connection[LedgerEntry]:
    key = decode_cursor(after)
    page = await billing.list_ledger(info.context.db, provider_id=provider_id, first=first, after=key)
    return connection(page, LedgerEntry.of, after=key)
