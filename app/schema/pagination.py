"""Relay connections (edges { node cursor } pageInfo) over keyset pages; cursors are opaque."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

import strawberry

from app.errors import InvalidInput
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


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    node: T
    cursor: str


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo


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
