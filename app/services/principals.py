"""Who may reach what: one model for every service (SPEC §10, STYLE §5c).

An operator principal (an admin user, an admin API key, the system) reaches everything its scopes
allow. A provider principal (`actor.provider_id` set) reaches only its own provider's data, and the
services enforce it in their SQL: reads filter `WHERE provider_id = :own` (`scope_to_own`, and
`visible_to_provider` for every table a nested read reaches), and an id of another provider's row
answers NOT_FOUND exactly as a missing one does (`check_own`), so nothing leaks, not even existence.
Operations reserved to operators answer FORBIDDEN (`require_operator`)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from app.errors import Forbidden, NotFound
from app.models.billing import Subscription
from app.models.leads import Assignment
from app.models.niches import CompetitionLevel

if TYPE_CHECKING:  # app.services.audit applies these rules too
    from app.services.audit import Actor

S = TypeVar("S")


def require_operator(actor: Actor, what: str) -> None:
    """Operator-only operations: a provider principal gets FORBIDDEN (it knows the operation exists)."""
    if actor.provider_id is not None:
        raise Forbidden(f"{what} is for operators; a provider's credentials cannot do it")


def own_provider_id(actor: Actor, requested: uuid.UUID | None) -> uuid.UUID | None:
    """The provider a read is restricted to: for a provider principal its own (a request for
    another provider's id is NOT_FOUND), for an operator the one requested (None: all)."""
    if actor.provider_id is None:
        return requested
    if requested is not None and requested != actor.provider_id:
        raise NotFound("provider", requested)
    return actor.provider_id


def check_own(actor: Actor, provider_id: uuid.UUID, entity: str, entity_id: object) -> None:
    """After reading a row by id: a provider principal that does not own it gets NOT_FOUND, as for
    a row that does not exist. Prefer filtering in the SQL (`scope_to_own`) where the read allows it."""
    if actor.provider_id is not None and actor.provider_id != provider_id:
        raise NotFound(entity, entity_id)


def scope_to_own(stmt: S, column: Any, actor: Actor) -> S:
    """`stmt` restricted to the principal's own provider (`column` is the row's provider id)."""
    if actor.provider_id is None:
        return stmt
    return stmt.where(column == actor.provider_id)  # type: ignore[attr-defined,no-any-return]


_subscriptions: sa.Table = Subscription.__table__  # type: ignore[attr-defined]
_assignments: sa.Table = Assignment.__table__  # type: ignore[attr-defined]
_levels: sa.Table = CompetitionLevel.__table__  # type: ignore[attr-defined]


def visible_to_provider(
    table: sa.Table, provider_id: uuid.UUID | sa.BindParameter[Any]
) -> sa.ColumnElement[bool]:
    """The rows of `table` a provider principal sees (`provider_id`: its id, or a bound parameter):
    its provider; the rows that carry its provider id; the leads assigned to it; the levels it
    subscribes to and their niches; no runs (operators only). Another table is refused rather than
    guessed at. The subqueries correlate to `table` alone, whatever else the query reads."""
    name = table.name
    if name == "providers":
        return table.c.id == provider_id
    if name in ("assignments", "subscriptions", "ledger_entries", "webhook_endpoints"):
        return table.c.provider_id == provider_id
    if name == "leads":
        return _exists(table, _assignments.c.lead_id == table.c.id, _assignments.c.provider_id == provider_id)
    if name == "competition_levels":
        return _exists(
            table,
            _subscriptions.c.competition_level_id == table.c.id,
            _subscriptions.c.provider_id == provider_id,
        )
    if name == "niches":
        return _exists(
            table,
            _levels.c.niche_id == table.c.id,
            _subscriptions.c.competition_level_id == _levels.c.id,
            _subscriptions.c.provider_id == provider_id,
        )
    if name == "distribution_runs":
        return sa.false()
    raise ValueError(f"no visibility rule for a provider principal on {name!r}: add one here")


def _exists(table: sa.Table, *conditions: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """EXISTS (… WHERE conditions), correlated to `table` alone, whatever else the query reads."""
    return sa.exists().where(*conditions).correlate(table)
