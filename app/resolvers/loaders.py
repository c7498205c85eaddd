"""Per-request dataloaders: each batch is one `= ANY($1)` query on a pooled connection, results in
key order. Nested list fields go through these, so a page of 100 leads costs a fixed number of
statements whatever it contains. They load plain rows (attribute access by column name, which is
all the GraphQL types read), not ORM instances: building and tracking those was a third of a
nested page's CPU.

Each batch runs its statement (compiled once per process by SQLAlchemy, prepared once per connection
by asyncpg) on a pooled connection's asyncpg driver directly: SQLAlchemy's Connection, execution
context and result around one autocommit read cost ~0.45 ms of CPU of a batch's ~0.7 ms
(`lead(id)` runs four). The values are the ones SQLAlchemy would give (its codecs are on the
connection; the bind processors of the parameters and the result processors of the columns are
applied); a connection that failed under a statement is invalidated, not pooled again.

A provider principal's loaders are scoped in their SQL (STYLE §5c): a nested field reaches only its
provider, its own assignments, the leads assigned to it, the levels it subscribes to and their
niches, and no runs. What another provider owns loads as missing (None, or an empty list)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict, namedtuple
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from strawberry.dataloader import DataLoader

from app.db import Database, driver_connection
from app.models.billing import LedgerEntry, Provider, Subscription
from app.models.distribution import DistributionRun
from app.models.leads import Assignment, Lead
from app.models.niches import CompetitionLevel, Niche
from app.models.webhooks import WebhookEndpoint
from app.services import caps
from app.services.caps import CapUsage
from app.services.principals import visible_to_provider

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
Load = Callable[[list[uuid.UUID]], Coroutine[Any, Any, list[Any]]]


class Loader(DataLoader[K, V]):
    """strawberry's DataLoader, with the GraphQL objects load_now made of its values beside them:
    each key's value is converted once per converter (a page of 100 leads names the same dozen
    providers and three levels hundreds of times; the objects are only read). Kept on the loader,
    so per request, and found by an attribute (a module-level WeakKeyDictionary from loader to memo
    made a weak reference per lookup: 0.52 against 0.32 µs, for ~1,300 lookups in a page of 100
    leads)."""

    def __init__(self, load_fn: Callable[[list[K]], Any], **options: Any) -> None:
        super().__init__(load_fn, **options)
        self.converted: dict[tuple[Any, Any], Any] = {}


# One array parameter (`= ANY($1)`), not `IN ($1, $2, ...)`: each loader's statement is built once and
# has one text whatever the batch size, so SQLAlchemy and asyncpg reuse its compiled and prepared forms.
KEYS = sa.bindparam("keys", type_=ARRAY(sa.Uuid()))


OWN = sa.bindparam("own", type_=sa.Uuid())


@cache  # built once per process, not per request
def _select(
    table: sa.Table, column: str, order: tuple[str, ...] = (), scoped: bool = False
) -> sa.Select[Any]:
    stmt = sa.select(table).where(table.c[column] == sa.any_(KEYS))
    if scoped:
        stmt = stmt.where(visible_to_provider(table, OWN))
    return stmt.order_by(*(table.c[o] for o in order))


@dataclass(frozen=True)
class _Compiled:
    sql: str
    parameters: tuple[str, ...]  # the bound names, in $n order
    row: Any  # a namedtuple of the selected columns
    processors: tuple[Callable[[Any], Any] | None, ...] | None  # None: no column has one
    binds: tuple[Callable[[Any], Any] | None, ...] = ()  # per parameter, as SQLAlchemy would apply them
    # a column whose processor depends on the type the server reports (numeric): SQLAlchemy runs it
    through_sqlalchemy: bool = False


@cache  # per statement and dialect: once per process
def _compiled(stmt: sa.Select[Any], dialect: Any) -> _Compiled:
    compiled = stmt.compile(dialect=dialect)
    columns = list(stmt.selected_columns)
    table = getattr(stmt.get_final_froms()[0], "name", "rows")
    try:
        processors = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
        parameters = tuple(compiled.positiontup or ())
        binds = tuple(
            compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in parameters
        )
    except (TypeError, ValueError, KeyError, NotImplementedError):
        return _Compiled(sql="", parameters=(), row=None, processors=None, through_sqlalchemy=True)
    return _Compiled(
        sql=str(compiled),
        parameters=parameters,
        row=namedtuple(f"{table}_row", [c.key for c in columns], rename=True),  # type: ignore[misc]  # noqa: PYI024
        processors=processors if any(processors) else None,
        binds=binds,
    )


async def fetch_rows(db: Database, stmt: sa.Select[Any], params: dict[str, Any]) -> list[Any]:
    """The rows of a read-only statement, as SQLAlchemy would give them (attribute access by column
    name), without SQLAlchemy's Connection and result machinery around it (see the module's
    docstring). Autocommit: asyncpg opens no transaction."""
    compiled = _compiled(stmt, db.autocommit.dialect)
    if compiled.through_sqlalchemy:
        async with db.connect() as conn:
            return list((await conn.execute(stmt, params)).all())
    arguments = [
        params[name] if bind is None else bind(params[name])
        for name, bind in zip(compiled.parameters, compiled.binds, strict=True)
    ]
    async with driver_connection(db.autocommit) as driver:
        records = await driver.fetch(compiled.sql, *arguments)
    make = compiled.row._make
    if compiled.processors is None:
        return [make(record) for record in records]
    processors = compiled.processors
    return [
        make(
            value if process is None else process(value)
            for process, value in zip(processors, record, strict=True)
        )
        for record in records
    ]


def _by_id(db: Database, model: Any, own: uuid.UUID | None) -> Load:
    stmt = _select(model.__table__, "id", scoped=own is not None)
    params: dict[str, Any] = {} if own is None else {"own": own}

    async def load(keys: list[uuid.UUID]) -> list[Any]:
        rows = await fetch_rows(db, stmt, {"keys": keys, **params})
        found = {row.id: row for row in rows}
        return [found.get(key) for key in keys]

    return load


def _grouped(
    db: Database, model: Any, column: str, own: uuid.UUID | None, order: tuple[str, ...] = ()
) -> Load:
    stmt = _select(model.__table__, column, order, scoped=own is not None)
    params: dict[str, Any] = {} if own is None else {"own": own}

    async def load(keys: list[uuid.UUID]) -> list[Any]:
        rows = await fetch_rows(db, stmt, {"keys": keys, **params})
        groups: dict[uuid.UUID, list[Any]] = defaultdict(list)
        for row in rows:
            groups[getattr(row, column)].append(row)
        return [groups.get(key, []) for key in keys]

    return load


class Loaders:
    """A request's loaders, each made on its first use (most requests use one or two of them; making
    all twelve was a thirtieth of a mutation's CPU). `own`: a provider principal's own provider;
    its loaders see only what it may."""

    def __init__(self, db: Database, own: uuid.UUID | None) -> None:
        self._db, self._own = db, own

    @cached_property
    def niche(self) -> Loader[uuid.UUID, Niche | None]:
        return Loader(_by_id(self._db, Niche, self._own))

    @cached_property
    def level(self) -> Loader[uuid.UUID, CompetitionLevel | None]:
        return Loader(_by_id(self._db, CompetitionLevel, self._own))

    @cached_property
    def provider(self) -> Loader[uuid.UUID, Provider | None]:
        return Loader(_by_id(self._db, Provider, self._own))

    @cached_property
    def lead(self) -> Loader[uuid.UUID, Lead | None]:
        return Loader(_by_id(self._db, Lead, self._own))

    @cached_property
    def assignment(self) -> Loader[uuid.UUID, Assignment | None]:
        return Loader(_by_id(self._db, Assignment, self._own))

    @cached_property
    def ledger_entry(self) -> Loader[uuid.UUID, LedgerEntry | None]:
        return Loader(_by_id(self._db, LedgerEntry, self._own))

    @cached_property
    def levels_by_niche(self) -> Loader[uuid.UUID, list[CompetitionLevel]]:
        return Loader(_grouped(self._db, CompetitionLevel, "niche_id", self._own, ("order_position",)))

    @cached_property
    def assignments_by_lead(self) -> Loader[uuid.UUID, list[Assignment]]:
        return Loader(_grouped(self._db, Assignment, "lead_id", self._own, ("created_at",)))

    @cached_property
    def runs_by_lead(self) -> Loader[uuid.UUID, list[DistributionRun]]:
        return Loader(_grouped(self._db, DistributionRun, "lead_id", self._own, ("created_at",)))

    @cached_property
    def subscriptions_by_provider(self) -> Loader[uuid.UUID, list[Subscription]]:
        return Loader(_grouped(self._db, Subscription, "provider_id", self._own, ("created_at",)))

    @cached_property
    def caps_by_provider(self) -> Loader[uuid.UUID, list[CapUsage]]:
        """Every cap of a provider (its own and its subscriptions'), with current usage."""
        return Loader(_caps(self._db, self._own))

    @cached_property
    def webhook_endpoints_by_provider(self) -> Loader[uuid.UUID, list[WebhookEndpoint]]:
        """Every endpoint of a provider, deleted ones included (callers filter)."""
        return Loader(_grouped(self._db, WebhookEndpoint, "provider_id", self._own, ("created_at", "id")))


def make_loaders(db: Database, *, provider_id: uuid.UUID | None = None) -> Loaders:
    """`provider_id`: a provider principal's own provider; its loaders see only what it may."""
    return Loaders(db, provider_id)


def _caps(db: Database, own: uuid.UUID | None) -> Load:
    async def load(keys: list[uuid.UUID]) -> list[Any]:
        visible = [key for key in keys if own is None or key == own]
        found = await caps.caps_of_providers(db, visible) if visible else {}
        return [found.get(key, []) for key in keys]

    return load


R = TypeVar("R")


def load_now(loader: Loader[uuid.UUID, Any], key: uuid.UUID, convert: Callable[[Any], R]) -> R:
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


def _converted(loader: Loader[Any, Any], key: Any, value: Any, convert: Callable[[Any], R]) -> R:
    memo = loader.converted
    found = memo.get((key, convert), _MISSING)
    if found is _MISSING:
        found = memo[(key, convert)] = convert(value)
    return cast(R, found)


_MISSING = object()
