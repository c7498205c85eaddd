"""Per-request dataloaders: each batch is one `= ANY($1)` query on a pooled connection, results in
key order. Nested list fields go through these, so a page of 100 leads costs a fixed number of
statements whatever it contains. They load plain rows (attribute access by column name, which is
all the GraphQL types read), not ORM instances: building and tracking those was a third of a
nested page's CPU."""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from strawberry.dataloader import DataLoader

from app.db import Database
from app.models.billing import Provider, Subscription
from app.models.distribution import DistributionRun
from app.models.leads import Assignment, Lead
from app.models.niches import CompetitionLevel, Niche
from app.models.webhooks import WebhookEndpoint

T = TypeVar("T")
Load = Callable[[list[uuid.UUID]], Coroutine[Any, Any, list[Any]]]


# One array parameter (`= ANY($1)`), not `IN ($1, $2, ...)`: each loader's statement is built once and
# has one text whatever the batch size, so SQLAlchemy and asyncpg reuse its compiled and prepared forms.
KEYS = sa.bindparam("keys", type_=ARRAY(sa.Uuid()))


@cache  # built once per process, not per request
def _select(table: sa.Table, column: str, order: tuple[str, ...] = ()) -> sa.Select[Any]:
    return sa.select(table).where(table.c[column] == sa.any_(KEYS)).order_by(*(table.c[o] for o in order))


def _by_id(db: Database, model: Any) -> Load:
    stmt = _select(model.__table__, "id")

    async def load(keys: list[uuid.UUID]) -> list[Any]:
        async with db.connect() as conn:
            rows = (await conn.execute(stmt, {"keys": keys})).all()
        found = {row.id: row for row in rows}
        return [found.get(key) for key in keys]

    return load


def _grouped(db: Database, model: Any, column: str, order: tuple[str, ...] = ()) -> Load:
    stmt = _select(model.__table__, column, order)

    async def load(keys: list[uuid.UUID]) -> list[Any]:
        async with db.connect() as conn:
            rows = (await conn.execute(stmt, {"keys": keys})).all()
        groups: dict[uuid.UUID, list[Any]] = defaultdict(list)
        for row in rows:
            groups[getattr(row, column)].append(row)
        return [groups.get(key, []) for key in keys]

    return load


@dataclass
class Loaders:
    niche: DataLoader[uuid.UUID, Niche | None]
    level: DataLoader[uuid.UUID, CompetitionLevel | None]
    provider: DataLoader[uuid.UUID, Provider | None]
    lead: DataLoader[uuid.UUID, Lead | None]
    levels_by_niche: DataLoader[uuid.UUID, list[CompetitionLevel]]
    assignments_by_lead: DataLoader[uuid.UUID, list[Assignment]]
    runs_by_lead: DataLoader[uuid.UUID, list[DistributionRun]]
    subscriptions_by_provider: DataLoader[uuid.UUID, list[Subscription]]
    # every endpoint of a provider, deleted ones included (callers filter)
    webhook_endpoints_by_provider: DataLoader[uuid.UUID, list[WebhookEndpoint]]


def make_loaders(db: Database) -> Loaders:
    return Loaders(
        niche=DataLoader(_by_id(db, Niche)),
        level=DataLoader(_by_id(db, CompetitionLevel)),
        provider=DataLoader(_by_id(db, Provider)),
        lead=DataLoader(_by_id(db, Lead)),
        levels_by_niche=DataLoader(_grouped(db, CompetitionLevel, "niche_id", ("order_position",))),
        assignments_by_lead=DataLoader(_grouped(db, Assignment, "lead_id", ("created_at",))),
        runs_by_lead=DataLoader(_grouped(db, DistributionRun, "lead_id", ("created_at",))),
        subscriptions_by_provider=DataLoader(_grouped(db, Subscription, "provider_id", ("created_at",))),
        webhook_endpoints_by_provider=DataLoader(
            _grouped(db, WebhookEndpoint, "provider_id", ("created_at", "id"))
        ),
    )


R = TypeVar("R")


def load_now(loader: DataLoader[uuid.UUID, Any], key: uuid.UUID, convert: Callable[[Any], R]) -> R:
    """The converted value at once when the loader already holds it (prefetched), else an
    awaitable of it, which graphql-core awaits (typed as R for the resolvers' annotations).
    Resolvers that use this stay synchronous in the common case: graphql-core creates a task per
    awaitable field, and a page of 100 leads has ~1,300 of them otherwise."""
    future = cast("asyncio.Future[Any]", loader.load(key))
    if future.done():
        return _converted(loader, key, future.result(), convert)

    async def later() -> R:
        return _converted(loader, key, await future, convert)

    return cast(R, later())


# Per loader (so per request): each key's value converted once per converter. A page of 100 leads
# names the same dozen providers and three levels hundreds of times; the GraphQL objects are only read.
_memo: weakref.WeakKeyDictionary[DataLoader[Any, Any], dict[tuple[Any, Any], Any]] = (
    weakref.WeakKeyDictionary()
)


def _converted(loader: DataLoader[Any, Any], key: Any, value: Any, convert: Callable[[Any], R]) -> R:
    memo = _memo.get(loader)
    if memo is None:
        memo = _memo[loader] = {}
    found = memo.get((key, convert), _MISSING)
    if found is _MISSING:
        found = memo[(key, convert)] = convert(value)
    return cast(R, found)


_MISSING = object()
