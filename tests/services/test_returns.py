"""Returns (SPEC §8) at the service level, on the real database: the window's edges by the database
clock, one refund whatever the races, CONFLICT and bad input writing nothing, the principal rules,
and the money invariants (ledger sum = balance >= 0, one refund of the price) after every step."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.db import Database
from app.engine.result import AssignedProvider
from app.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from app.models.audit import ActorType
from app.models.billing import LedgerKind, Provider
from app.models.niches import Niche
from app.models.returns import ReturnReason, ReturnStatus
from app.services import billing, niches, returns, stats
from app.services.audit import SYSTEM, Actor
from app.services.pages import PageKey
from tests.factories import backdate_assignments, make_assignment, make_niche, make_provider, subscribe
from tests.invariants import assert_invariants

OPERATOR = Actor(ActorType.USER, uuid.uuid4(), scopes=frozenset({"admin"}))


def buyer(provider: Provider) -> Actor:
    """A provider principal (provider sign-in comes later; the services already apply it)."""
    return Actor(ActorType.USER, uuid.uuid4(), scopes=frozenset({"read"}), provider_id=provider.id)


async def _bought(
    db: Database, *, price: int = 1000, balance: int = 1500, leads: int = 1
) -> tuple[Niche, Provider, uuid.UUID, list[AssignedProvider]]:
    """A provider subscribed to a one-level niche, with `leads` assignments bought at `price`."""
    niche, (level,) = await make_niche(db, levels=[(price, 1)])
    provider = await make_provider(db, balance_cents=balance)
    subscription = await subscribe(db, provider, level)
    bought = [await make_assignment(db, niche, provider) for _ in range(leads)]
    return niche, provider, subscription.id, bought


async def _scalar(db: Database, sql: str, **params: Any) -> Any:
    async with db.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar_one()


async def _written(db: Database) -> tuple[int, ...]:
    """What a refused operation must leave unchanged."""
    async with db.engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text("""SELECT (SELECT count(*) FROM returns),
                                  (SELECT count(*) FROM returns WHERE status <> 'REQUESTED'),
                                  (SELECT count(*) FROM ledger_entries), (SELECT count(*) FROM audit_log),
                                  (SELECT coalesce(sum(balance_cents), 0) FROM providers)""")
            )
        ).one()
    return tuple(row)


async def _refused(db: Database, error: type[DomainError], call: Any) -> DomainError:
    before = await _written(db)
    with pytest.raises(error) as raised:
        await call
    assert await _written(db) == before, "a refused operation wrote something"
    return raised.value


async def _age(db: Database, assignment_id: uuid.UUID, seconds: float) -> None:
    """Moves the assignment `seconds` into the past of the database clock."""
    await backdate_assignments(
        db, "id = :id", "now() - make_interval(secs => :s)", s=seconds, id=assignment_id
    )


async def _balance(db: Database, provider: Provider) -> int:
    return (await billing.get_provider(db, provider.id, actor=SYSTEM)).balance_cents


async def test_request_then_approve_refunds_the_price_once(db: Database) -> None:
    _, provider, subscription_id, (bought,) = await _bought(db, price=1000, balance=1500)
    status_sql = "SELECT status FROM subscriptions WHERE id = :id"
    assert await _scalar(db, status_sql, id=subscription_id) == "INSUFFICIENT_FUNDS"
    await assert_invariants(db)

    requested = await returns.request_return(
        db,
        actor=buyer(provider),
        assignment_id=bought.assignment_id,
        reason=ReturnReason.INVALID_CONTACT,
        note="  the phone number is disconnected ",
    )
    assert requested.status == ReturnStatus.REQUESTED
    assert (requested.provider_id, requested.note) == (provider.id, "the phone number is disconnected")
    assert requested.refund_entry_id is None and requested.decided_at is None
    assert await _balance(db, provider) == 500
    await assert_invariants(db)

    approved = await returns.approve_return(db, actor=OPERATOR, return_id=requested.id)
    assert approved.status == ReturnStatus.APPROVED
    assert approved.decided_by == str(OPERATOR) and approved.decided_at is not None
    assert await _balance(db, provider) == 1500
    # the new balance covers the level again
    assert await _scalar(db, status_sql, id=subscription_id) == "ACTIVE"
    async with db.engine.connect() as conn:
        refund = (
            await conn.execute(
                sa.text("SELECT * FROM ledger_entries WHERE kind = 'REFUND' AND provider_id = :p"),
                {"p": provider.id},
            )
        ).one()
        actions = (
            await conn.execute(
                sa.text("SELECT action FROM audit_log WHERE entity_id = :id ORDER BY created_at"),
                {"id": requested.id},
            )
        ).scalars()
        assert list(actions) == ["RETURN_REQUESTED", "RETURN_APPROVED"]
    assert (refund.id, refund.assignment_id) == (approved.refund_entry_id, bought.assignment_id)
    assert (refund.amount_cents, refund.balance_after_cents) == (1000, 1500)
    await assert_invariants(db)

    # decided once: a second approval or a rejection is a CONFLICT that writes nothing
    await _refused(db, Conflict, returns.approve_return(db, actor=OPERATOR, return_id=requested.id))
    await _refused(db, Conflict, returns.reject_return(db, actor=OPERATOR, return_id=requested.id, note="n"))
    # the assignment stays: a return does not reopen a cap
    assert await _scalar(db, "SELECT count(*) FROM assignments WHERE provider_id = :p", p=provider.id) == 1
    await assert_invariants(db)


async def test_reject_keeps_the_money_and_needs_a_note(db: Database) -> None:
    _, provider, _, (bought,) = await _bought(db)
    requested = await returns.request_return(
        db, actor=OPERATOR, assignment_id=bought.assignment_id, reason=ReturnReason.DUPLICATE
    )
    assert requested.note is None  # optional unless the reason is OTHER
    for note in ("", "   ", "x" * 2001, "nul\x00"):
        await _refused(
            db, InvalidInput, returns.reject_return(db, actor=OPERATOR, return_id=requested.id, note=note)
        )
    rejected = await returns.reject_return(
        db, actor=OPERATOR, return_id=requested.id, note="the lead was called within the hour"
    )
    assert rejected.status == ReturnStatus.REJECTED
    assert rejected.decision_note == "the lead was called within the hour"
    assert rejected.refund_entry_id is None
    assert await _balance(db, provider) == 500
    await assert_invariants(db)
    await _refused(db, Conflict, returns.approve_return(db, actor=OPERATOR, return_id=requested.id))
    await assert_invariants(db)


async def test_the_window_by_the_database_clock_one_second_either_side(db: Database) -> None:
    niche, provider, _, (inside, outside) = await _bought(db, balance=5000, leads=2)
    assert niche.return_window_hours == 72
    await _age(db, inside.assignment_id, 72 * 3600 - 1)
    await _age(db, outside.assignment_id, 72 * 3600 + 1)
    late = await _refused(
        db,
        Conflict,
        returns.request_return(
            db, actor=buyer(provider), assignment_id=outside.assignment_id, reason=ReturnReason.OUT_OF_AREA
        ),
    )
    assert "closed at" in str(late)
    made = await returns.request_return(
        db, actor=buyer(provider), assignment_id=inside.assignment_id, reason=ReturnReason.OUT_OF_AREA
    )
    assert made.status == ReturnStatus.REQUESTED
    await assert_invariants(db)


async def test_a_window_set_on_the_niche_and_zero_turns_returns_off(db: Database) -> None:
    niche, provider, _, (first, second) = await _bought(db, balance=5000, leads=2)
    await niches.update_niche(db, actor=OPERATOR, niche_id=niche.id, return_window_hours=0)
    off = await _refused(
        db,
        Conflict,
        returns.request_return(
            db, actor=OPERATOR, assignment_id=first.assignment_id, reason=ReturnReason.DUPLICATE
        ),
    )
    assert "returns are off" in str(off)
    await niches.update_niche(db, actor=OPERATOR, niche_id=niche.id, return_window_hours=2)
    await _age(db, first.assignment_id, 2 * 3600 + 1)
    await _age(db, second.assignment_id, 2 * 3600 - 1)
    await _refused(
        db,
        Conflict,
        returns.request_return(
            db, actor=OPERATOR, assignment_id=first.assignment_id, reason=ReturnReason.DUPLICATE
        ),
    )
    await returns.request_return(
        db, actor=OPERATOR, assignment_id=second.assignment_id, reason=ReturnReason.DUPLICATE
    )
    await assert_invariants(db)


async def test_return_window_hours_is_validated(db: Database) -> None:
    niche = await niches.create_niche(db, actor=OPERATOR, name="Windows", return_window_hours=24)
    assert (await niches.get_niche(db, niche.id, actor=SYSTEM)).return_window_hours == 24
    for hours in (-1, 24 * 366 + 1, True):
        with pytest.raises(InvalidInput) as bad:
            await niches.update_niche(db, actor=OPERATOR, niche_id=niche.id, return_window_hours=hours)
        assert bad.value.field == "returnWindowHours"
        with pytest.raises(InvalidInput):
            await niches.create_niche(db, actor=OPERATOR, name=f"W{hours}", return_window_hours=hours)
    assert (await niches.get_niche(db, niche.id, actor=SYSTEM)).return_window_hours == 24


async def test_a_second_request_is_a_conflict_even_at_the_same_moment(db: Database) -> None:
    _, provider, _, (first, second) = await _bought(db, balance=5000, leads=2)
    await returns.request_return(
        db, actor=buyer(provider), assignment_id=first.assignment_id, reason=ReturnReason.DUPLICATE
    )
    again = await _refused(
        db,
        Conflict,
        returns.request_return(
            db, actor=OPERATOR, assignment_id=first.assignment_id, reason=ReturnReason.OTHER, note="again"
        ),
    )
    assert "already has a return" in str(again)
    results = await asyncio.gather(
        *(
            returns.request_return(
                db, actor=buyer(provider), assignment_id=second.assignment_id, reason=ReturnReason.DUPLICATE
            )
            for _ in range(8)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException)), results
    assert await _scalar(db, "SELECT count(*) FROM returns") == 2
    assert await _scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'RETURN_REQUESTED'") == 2
    await assert_invariants(db)


async def test_bad_requests_write_nothing(db: Database) -> None:
    _, _, _, (bought,) = await _bought(db)
    ident = bought.assignment_id
    for reason, note in ((ReturnReason.OTHER, None), (ReturnReason.OTHER, "  "), ("WRONG", "x")):
        await _refused(
            db,
            InvalidInput,
            returns.request_return(db, actor=OPERATOR, assignment_id=ident, reason=reason, note=note),  # type: ignore[arg-type]
        )
    await _refused(
        db,
        InvalidInput,
        returns.request_return(
            db, actor=OPERATOR, assignment_id=ident, reason=ReturnReason.DUPLICATE, note="x" * 2001
        ),
    )


async def test_unknown_and_foreign_ids_are_not_found_and_decisions_are_for_operators(db: Database) -> None:
    _, mine, _, (bought,) = await _bought(db, balance=5000)
    _, theirs, _, (foreign,) = await _bought(db, balance=5000)
    me = buyer(mine)
    missing = uuid.uuid4()
    for actor in (me, OPERATOR):
        err = await _refused(
            db,
            NotFound,
            returns.request_return(db, actor=actor, assignment_id=missing, reason=ReturnReason.DUPLICATE),
        )
        assert str(err) == f"assignment {missing} does not exist"
    # another provider's assignment looks exactly like a missing one
    err = await _refused(
        db,
        NotFound,
        returns.request_return(
            db, actor=me, assignment_id=foreign.assignment_id, reason=ReturnReason.DUPLICATE
        ),
    )
    assert str(err) == f"assignment {foreign.assignment_id} does not exist"

    own = await returns.request_return(
        db, actor=me, assignment_id=bought.assignment_id, reason=ReturnReason.DUPLICATE
    )
    # an operator may ask on a provider's behalf
    other = await returns.request_return(
        db, actor=OPERATOR, assignment_id=foreign.assignment_id, reason=ReturnReason.DUPLICATE
    )
    assert other.requested_by == str(OPERATOR)

    # decisions are operator-only, whoever's return it is
    await _refused(db, Forbidden, returns.approve_return(db, actor=me, return_id=own.id))
    await _refused(db, Forbidden, returns.reject_return(db, actor=me, return_id=own.id, note="no"))
    await _refused(db, NotFound, returns.approve_return(db, actor=OPERATOR, return_id=missing))
    await _refused(db, NotFound, returns.reject_return(db, actor=OPERATOR, return_id=missing, note="no"))

    # reads: a provider principal sees its own only
    assert (await returns.get_return(db, actor=me, return_id=own.id)).id == own.id
    with pytest.raises(NotFound):
        await returns.get_return(db, actor=me, return_id=other.id)
    page = await returns.list_returns(db, actor=me, first=10, after=None)
    assert [r.id for r in page.items] == [own.id]
    with pytest.raises(NotFound):
        await returns.list_returns(db, actor=me, provider_id=theirs.id, first=10, after=None)
    everything = await returns.list_returns(db, actor=OPERATOR, first=10, after=None)
    assert {r.id for r in everything.items} == {own.id, other.id}
    theirs_only = await returns.list_returns(db, actor=OPERATOR, provider_id=theirs.id, first=10, after=None)
    assert [r.id for r in theirs_only.items] == [other.id]
    await assert_invariants(db)


async def test_list_filters_by_status_and_pages_newest_first(db: Database) -> None:
    _, provider, _, bought = await _bought(db, price=100, balance=1000, leads=5)
    made = [
        await returns.request_return(
            db, actor=OPERATOR, assignment_id=b.assignment_id, reason=ReturnReason.DUPLICATE
        )
        for b in bought
    ]
    await returns.approve_return(db, actor=OPERATOR, return_id=made[1].id)
    await returns.reject_return(db, actor=OPERATOR, return_id=made[3].id, note="no")
    approved = await returns.list_returns(
        db, actor=OPERATOR, status=ReturnStatus.APPROVED, first=10, after=None
    )
    assert [r.id for r in approved.items] == [made[1].id]
    first = await returns.list_returns(db, actor=OPERATOR, first=2, after=None)
    assert first.has_next and [r.id for r in first.items] == [made[4].id, made[3].id]
    last = first.items[-1]
    rest = await returns.list_returns(db, actor=OPERATOR, first=10, after=PageKey(last.created_at, last.id))
    assert not rest.has_next and [r.id for r in rest.items] == [made[2].id, made[1].id, made[0].id]
    await assert_invariants(db)


async def test_ten_concurrent_approvals_refund_once(db: Database) -> None:
    _, provider, _, (bought,) = await _bought(db, price=1000, balance=1000)
    requested = await returns.request_return(
        db, actor=OPERATOR, assignment_id=bought.assignment_id, reason=ReturnReason.INVALID_CONTACT
    )
    results = await asyncio.gather(
        *(returns.approve_return(db, actor=OPERATOR, return_id=requested.id) for _ in range(10)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1, results
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException)), results
    assert await _scalar(db, "SELECT count(*) FROM ledger_entries WHERE kind = 'REFUND'") == 1
    assert await _scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'RETURN_APPROVED'") == 1
    assert await _balance(db, provider) == 1000
    await assert_invariants(db)


async def test_approvals_racing_top_ups_keep_the_ledger_equal_to_the_balance(db: Database) -> None:
    _, provider, _, bought = await _bought(db, price=700, balance=700 * 6, leads=6)
    expected = 0
    for i, assigned in enumerate(bought):
        requested = await returns.request_return(
            db, actor=buyer(provider), assignment_id=assigned.assignment_id, reason=ReturnReason.DUPLICATE
        )
        approved, topped = await asyncio.gather(
            returns.approve_return(db, actor=OPERATOR, return_id=requested.id),
            billing.top_up(
                db, actor=OPERATOR, provider_id=provider.id, amount_cents=50 + i, reference=f"t{i}"
            ),
        )
        expected += 700 + 50 + i
        assert approved.status == ReturnStatus.APPROVED and topped.kind == LedgerKind.TOP_UP
        assert await _balance(db, provider) == expected
        await assert_invariants(db)


async def test_the_database_refuses_a_second_refund_of_an_assignment(db: Database) -> None:
    _, provider, _, (bought,) = await _bought(db)
    requested = await returns.request_return(
        db, actor=OPERATOR, assignment_id=bought.assignment_id, reason=ReturnReason.DUPLICATE
    )
    await returns.approve_return(db, actor=OPERATOR, return_id=requested.id)
    with pytest.raises(IntegrityError, match="uq_ledger_entries_refund_assignment"):
        async with db.engine.begin() as conn:
            await conn.execute(
                sa.text("""INSERT INTO ledger_entries (provider_id, amount_cents, balance_after_cents,
                                                      kind, assignment_id)
                           VALUES (:p, 1, 1, 'REFUND', :a)"""),
                {"p": provider.id, "a": bought.assignment_id},
            )
    # and a manual refund cannot name an assignment: its refund comes from its return
    await _refused(
        db,
        InvalidInput,
        billing.adjust_balance(
            db,
            actor=OPERATOR,
            provider_id=provider.id,
            amount_cents=1000,
            kind=LedgerKind.REFUND,
            assignment_id=bought.assignment_id,
        ),
    )
    await assert_invariants(db)


async def test_a_free_assignment_is_refunded_zero(db: Database) -> None:
    """A level priced 0 still gets its REFUND row: every approval has its ledger entry."""
    _, provider, _, (bought,) = await _bought(db, price=0, balance=0)
    requested = await returns.request_return(
        db, actor=OPERATOR, assignment_id=bought.assignment_id, reason=ReturnReason.DUPLICATE
    )
    approved = await returns.approve_return(db, actor=OPERATOR, return_id=requested.id)
    assert approved.refund_entry_id is not None
    assert await _balance(db, provider) == 0
    await assert_invariants(db)


async def test_stats_count_the_returns_of_the_ranges_assignments(db: Database) -> None:
    niche, provider, _, bought = await _bought(db, price=400, balance=2000, leads=4)
    made = [
        await returns.request_return(
            db, actor=OPERATOR, assignment_id=b.assignment_id, reason=ReturnReason.DUPLICATE
        )
        for b in bought[:3]
    ]
    await returns.approve_return(db, actor=OPERATOR, return_id=made[0].id)
    await returns.reject_return(db, actor=OPERATOR, return_id=made[1].id, note="no")
    (found,) = await stats.distribution_stats(db, actor=OPERATOR, niche_id=niche.id, since=None, until=None)
    assert (found.assignments, found.revenue_cents) == (4, 1600)  # revenue is what was charged
    assert (found.returns_requested, found.returns_approved, found.refunded_cents) == (3, 1, 400)
    assert found.return_rate == 0.25
    # the range selects assignments: an older one's return counts in its own range, not a later one
    await _age(db, bought[0].assignment_id, 3600)
    since = await _scalar(db, "SELECT now() - interval '30 minutes'")
    (recent,) = await stats.distribution_stats(db, actor=OPERATOR, niche_id=niche.id, since=since, until=None)
    assert (recent.assignments, recent.returns_approved, recent.refunded_cents) == (3, 0, 0)
    assert recent.return_rate == 0.0
    (empty,) = await stats.distribution_stats(
        db, actor=OPERATOR, niche_id=niche.id, since=since + timedelta(days=1), until=None
    )
    assert (empty.assignments, empty.return_rate, empty.refunded_cents) == (0, None, 0)


async def test_an_approval_meeting_a_refund_written_elsewhere_is_a_conflict(db: Database) -> None:
    """Only the partial unique index stands between a refund written by some other path and a
    second one: the approval then answers CONFLICT and writes nothing."""
    _, provider, _, (bought,) = await _bought(db)
    requested = await returns.request_return(
        db, actor=OPERATOR, assignment_id=bought.assignment_id, reason=ReturnReason.DUPLICATE
    )
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.text("""INSERT INTO ledger_entries (provider_id, amount_cents, balance_after_cents,
                                                  kind, assignment_id)
                       VALUES (:p, 0, 500, 'REFUND', :a)"""),
            {"p": provider.id, "a": bought.assignment_id},
        )
    refused = await _refused(db, Conflict, returns.approve_return(db, actor=OPERATOR, return_id=requested.id))
    assert "already refunded" in str(refused)
    assert (await returns.get_return(db, actor=OPERATOR, return_id=requested.id)).status == "REQUESTED"
