"""The money and fairness invariants, checked in SQL against the real database after a test."""

from __future__ import annotations

from app.db import Database
from app.models.billing import LedgerKind
from app.models.returns import ReturnStatus

REFUND, APPROVED = LedgerKind.REFUND.value, ReturnStatus.APPROVED.value

CHECKS = {
    "negative balance": "SELECT count(*) FROM providers WHERE balance_cents < 0",
    "ledger sum != balance": """
        SELECT count(*) FROM providers p
        LEFT JOIN (SELECT provider_id, sum(amount_cents) AS total FROM ledger_entries
                   GROUP BY provider_id) l ON l.provider_id = p.id
        WHERE coalesce(l.total, 0) <> p.balance_cents""",
    "assignment without exactly one matching charge": """
        SELECT count(*) FROM assignments a
        WHERE (SELECT count(*) FROM ledger_entries e
               WHERE e.assignment_id = a.id AND e.kind = 'CHARGE'
                 AND e.provider_id = a.provider_id AND e.amount_cents = -a.price_charged_cents) <> 1""",
    "charges != assignments": """
        SELECT abs((SELECT count(*) FROM assignments)
                   - (SELECT count(*) FROM ledger_entries WHERE kind = 'CHARGE'))""",
    "duplicate (lead, provider)": """
        SELECT count(*) FROM (SELECT 1 FROM assignments GROUP BY lead_id, provider_id
                              HAVING count(*) > 1) d""",
    "more than max_recipients per lead and level": """
        SELECT count(*) FROM (SELECT 1 FROM assignments a
                              JOIN competition_levels l ON l.id = a.competition_level_id
                              GROUP BY a.lead_id, a.competition_level_id, l.max_recipients
                              HAVING count(*) > l.max_recipients) x""",
    "assignment without outbox row": """
        SELECT count(*) FROM assignments a
        LEFT JOIN notifications n ON n.assignment_id = a.id WHERE n.id IS NULL""",
    "DISTRIBUTED lead without assignment": """
        SELECT count(*) FROM leads l WHERE l.status = 'DISTRIBUTED'
          AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.lead_id = l.id)""",
    # every usage counter (providers: all their assignments; subscriptions: theirs), for the period
    # it counts and the current one (which has used nothing unless it is the counted one), and in
    # all, recounted from the assignments with the same period definition
    **{
        f"{table} {period} usage != its assignments": f"""
        SELECT count(*) FROM {table} r
        JOIN providers p ON p.id = {"r.id" if table == "providers" else "r.provider_id"}
        CROSS JOIN LATERAL (
            SELECT r.usage_{period}_start AS start, r.usage_{period}_leads AS leads,
                   r.usage_{period}_spend_cents AS spend
            WHERE r.usage_{period}_start IS NOT NULL
            UNION
            SELECT cur, 0, 0 FROM lw_period_start('{period.upper()}', clock_timestamp(), p.timezone) cur
            WHERE cur IS DISTINCT FROM r.usage_{period}_start
        ) kept
        CROSS JOIN LATERAL (
            SELECT count(*) AS leads, coalesce(sum(a.price_charged_cents), 0) AS spend
            FROM assignments a
            WHERE a.{"provider_id" if table == "providers" else "subscription_id"} = r.id
              AND lw_period_start('{period.upper()}', a.created_at, p.timezone) = kept.start
        ) real
        WHERE (kept.leads, kept.spend) <> (real.leads, real.spend)"""
        for table in ("providers", "subscriptions")
        for period in ("day", "week", "month")
    },
    **{
        f"{table} total usage != its assignments": f"""
        SELECT count(*) FROM {table} r
        WHERE (r.usage_total_leads, r.usage_total_spend_cents) <>
              (SELECT count(*), coalesce(sum(a.price_charged_cents), 0) FROM assignments a
               WHERE a.{"provider_id" if table == "providers" else "subscription_id"} = r.id)"""
        for table in ("providers", "subscriptions")
    },
    "more than one refund of an assignment": f"""
        SELECT count(*) FROM (SELECT 1 FROM ledger_entries WHERE kind = '{REFUND}'
                              AND assignment_id IS NOT NULL
                              GROUP BY assignment_id HAVING count(*) > 1) d""",
    "refund of an assignment != its price, or to another provider": f"""
        SELECT count(*) FROM ledger_entries e JOIN assignments a ON a.id = e.assignment_id
        WHERE e.kind = '{REFUND}'
          AND (e.amount_cents <> a.price_charged_cents OR e.provider_id <> a.provider_id)""",
    "refund of an assignment without its approved return": f"""
        SELECT count(*) FROM ledger_entries e WHERE e.kind = '{REFUND}' AND e.assignment_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM returns r WHERE r.refund_entry_id = e.id
                          AND r.assignment_id = e.assignment_id AND r.status = '{APPROVED}')""",
    "approved return without its refund": f"""
        SELECT count(*) FROM returns r WHERE r.status = '{APPROVED}'
          AND NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.id = r.refund_entry_id
                          AND e.kind = '{REFUND}' AND e.assignment_id = r.assignment_id)""",
    "return whose lead or provider is not its assignment's": """
        SELECT count(*) FROM returns r JOIN assignments a ON a.id = r.assignment_id
        WHERE r.lead_id <> a.lead_id OR r.provider_id <> a.provider_id""",
}


async def violations(db: Database) -> dict[str, int]:
    found: dict[str, int] = {}
    async with db.engine.connect() as conn:
        for name, sql in CHECKS.items():
            found[name] = int((await conn.exec_driver_sql(sql)).scalar_one())
    return {k: v for k, v in found.items() if v}


async def assert_invariants(db: Database) -> None:
    found = await violations(db)
    assert found == {}, found
