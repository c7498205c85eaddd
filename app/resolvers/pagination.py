"""Keyset pages as Relay connections: opaque cursors over (created_at, id)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from app.errors import InvalidInput
from app.schema.pagination import Connection, Edge, PageInfo
from app.services.pages import Page, PageKey

T = TypeVar("T")


def encode_cursor(created_at: datetime, ident: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{ident}".encode()).decode()


def decode_cursor(cursor: str | None) -> PageKey | None:
    if cursor is None:
        return None
    try:
        created, ident = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return PageKey(created_at=datetime.fromisoformat(created), id=uuid.UUID(ident))
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("after is not a cursor this API returned", field="after") from None


def connection(page: Page[Any], convert: Callable[[Any], T], *, after: PageKey | None) -> Connection[T]:
    edges = [Edge(node=convert(item), cursor=encode_cursor(item.created_at, item.id)) for item in page.items]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )
