"""Billing: refunds, manual charges and adjustments keep ledger == balance >= 0, and move the
INSUFFICIENT_FUNDS <-> ACTIVE statuses both ways."""

import pytest
import sqlalchemy as sa

from app.db import Database
from app.errors import Conflict, InvalidInput
from app.models.billing import LedgerKind
from app.services import billing
from app.services.audit import SYSTEM
from tests.factories import make_niche, make_provider, subscribe
from tests.invariants import assert_invariants


async def _status(db: Database, subscription_id: object) -> str:
    async with db.engine.connect() as conn:
        return str(
            (
                await conn.execute(
                    sa.text("SELECT status FROM subscriptions WHERE id = :id"), {"id": subscription_id}
                )
            ).scalar_one()
        )


async def test_refund_charge_and_adjustment(db: Database) -> None:
    _, (level,) = await make_niche(db, levels=[(1000, 1)])
    provider = await make_provider(db, balance_cents=1500)
    sub = await subscribe(db, provider, level)
    assert await _status(db, sub.id) == "ACTIVE"
    charged = await billing.adjust_balance(
        db,
        actor=SYSTEM,
        provider_id=provider.id,
        amount_cents=-600,
        kind=LedgerKind.ADJUSTMENT,
        note="manual",
    )
    assert charged.balance_after_cents == 900
    assert await _status(db, sub.id) == "INSUFFICIENT_FUNDS"
    refunded = await billing.adjust_balance(
        db,
        actor=SYSTEM,
        provider_id=provider.id,
        amount_cents=200,
        kind=LedgerKind.REFUND,
        reference="bad lead",
    )
    assert refunded.balance_after_cents == 1100
    assert await _status(db, sub.id) == "ACTIVE"
    adjusted = await billing.adjust_balance(
        db, actor=SYSTEM, provider_id=provider.id, amount_cents=-1100, kind=LedgerKind.ADJUSTMENT
    )
    assert adjusted.balance_after_cents == 0
    with pytest.raises(Conflict):
        await billing.adjust_balance(
            db, actor=SYSTEM, provider_id=provider.id, amount_cents=-1, kind=LedgerKind.ADJUSTMENT
        )
    for amount, kind in (
        (-5, LedgerKind.REFUND),
        (-5, LedgerKind.CHARGE),
        (0, LedgerKind.ADJUSTMENT),
        (5, LedgerKind.TOP_UP),
    ):
        with pytest.raises(InvalidInput):
            await billing.adjust_balance(
                db, actor=SYSTEM, provider_id=provider.id, amount_cents=amount, kind=kind
            )
    assert (await billing.get_provider(db, provider.id, actor=SYSTEM)).balance_cents == 0
    await assert_invariants(db)


async def test_top_up_reference_with_another_amount_is_a_conflict(db: Database) -> None:
    provider = await make_provider(db)
    await billing.top_up(db, actor=SYSTEM, provider_id=provider.id, amount_cents=100, reference="inv-9")
    with pytest.raises(Conflict):
        await billing.top_up(db, actor=SYSTEM, provider_id=provider.id, amount_cents=200, reference="inv-9")
    assert (await billing.get_provider(db, provider.id, actor=SYSTEM)).balance_cents == 100
