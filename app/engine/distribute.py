"""distribute_lead: SPEC §2 as one READ COMMITTED transaction in five round trips (BEGIN and COMMIT
included):

    lock lead (+ run) and niche -> read the candidates -> plan (pure Python)
    -> one write, which locks the chosen providers in id order first (and writes nothing, to
       re-plan, if one of them moved since the read).

Deadlocks and serialization failures re-run the whole transaction (retry_on_conflict)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg

from app.db import Database, driver_connection, retry_on_conflict
from app.engine.charge import Written, write_distribution
from app.engine.plan import NicheState, Pick, Plan, Skip, plan_distribution
from app.engine.result import AssignedProvider, DistributionResult, SkippedProvider
from app.engine.snapshot import (
    LockedLead,
    lock_lead,
    read_full_levels,
    read_niche_state,
    read_providers,
)
from app.errors import LeadNotDistributable, NotFound
from app.models.distribution import ASSIGNING_RUN_STATUSES, TERMINAL_RUN_STATUSES, RunStatus
from app.models.leads import DISTRIBUTABLE, LeadStatus
from app.progress.events import EventType, ProgressEvent


class EngineInvariantError(RuntimeError):
    """The write did not match the plan made under locks: rolled back, never committed."""


async def distribute_lead(
    db: Database,
    *,
    lead_id: uuid.UUID,
    run_id: uuid.UUID | None = None,
    requested_by: str = "system",
    dashboard_url: str = "",
    webhook_lease_seconds: float = 0,
) -> DistributionResult:
    """Distributes one lead. With `run_id`, executes that (QUEUED or RUNNING) run; without, records
    a new run. Safe to call twice: the lead's row lock serialises calls and the second one finds
    the first one's result and charges nobody. With `webhook_lease_seconds`, the webhook deliveries
    to healthy endpoints are the caller's to send for that long (`result.webhooks_leased`)."""
    return await _distribute(
        db,
        lead_id=lead_id,
        given_run_id=run_id,
        new_run_id=uuid.uuid4(),
        requested_by=requested_by,
        dashboard_url=dashboard_url,
        webhook_lease_seconds=webhook_lease_seconds,
    )


@retry_on_conflict()
async def _distribute(
    db: Database,
    *,
    lead_id: uuid.UUID,
    given_run_id: uuid.UUID | None,
    new_run_id: uuid.UUID,
    requested_by: str,
    dashboard_url: str,
    webhook_lease_seconds: float,
) -> DistributionResult:
    # the raw driver (no SQLAlchemy execution machinery), its errors raised as DBAPIError as
    # everywhere else, so retry_on_conflict sees them; a session the server ended is never reused
    async with driver_connection(db.engine) as conn, conn.transaction():
        return await _run_transaction(
            conn,
            lead_id=lead_id,
            given_run_id=given_run_id,
            run_id=given_run_id or new_run_id,
            requested_by=requested_by,
            dashboard_url=dashboard_url,
            webhook_lease_seconds=webhook_lease_seconds,
        )


async def _run_transaction(
    conn: asyncpg.Connection,
    *,
    lead_id: uuid.UUID,
    given_run_id: uuid.UUID | None,
    run_id: uuid.UUID,
    requested_by: str,
    dashboard_url: str,
    webhook_lease_seconds: float,
) -> DistributionResult:
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    lead = await lock_lead(conn, lead_id, given_run_id)
    if lead is None:
        await _raise_not_found(conn, lead_id, given_run_id)
        raise AssertionError("unreachable")
    if lead.run_status in TERMINAL_RUN_STATUSES or lead.run_not_due:
        return await _replay(conn, run_id=run_id, lead_id=lead_id, lead=lead)
    if lead.status == LeadStatus.DISTRIBUTED:
        return await _already_distributed(
            conn, run_id=run_id, given=given_run_id is not None, lead_id=lead_id, lead=lead
        )
    if lead.status not in DISTRIBUTABLE:
        raise LeadNotDistributable(
            f"lead {lead_id} is {lead.status}: only APPROVED or NO_ELIGIBLE leads are distributed"
        )

    state = await read_niche_state(conn, lead=lead, niche_id=lead.niche_id, at=started_at)

    async def write(plan: Plan) -> Written:
        return await write_distribution(
            conn,
            lead_id=lead_id,
            run_id=run_id,
            niche_id=lead.niche_id,
            niche_name=lead.niche_name,
            plan=plan,
            requested_by=lead.requested_by if given_run_id and lead.requested_by else requested_by,
            started_at=started_at,
            duration_ms=(time.perf_counter() - clock) * 1000,
            outcome=_outcome_json(plan),
            seq_after=lead.run_seq + _event_count(plan),
            dashboard_url=dashboard_url,
            last_served_at=lead.last_served_at,
            webhook_lease_seconds=webhook_lease_seconds,
        )

    plan, written, statements = await _plan_and_write(conn, state, lead.attributes, write)
    if set(written.assignment_ids) != set(plan.picked_provider_ids):
        raise EngineInvariantError(
            f"lead {lead_id}: planned {len(plan.picks)} assignments, wrote {len(written.assignment_ids)}"
        )
    at = written.at or started_at
    events = _events(plan, run_id=run_id, lead_id=lead_id, niche_id=lead.niche_id, base=lead.run_seq, at=at)
    return DistributionResult(
        run_id=run_id,
        lead_id=lead_id,
        niche_id=lead.niche_id,
        status=plan.outcome,
        assigned=_assigned(plan, written),
        skipped=[_skipped(s) for s in plan.skips],
        events=events,
        statements=2 + statements,
        webhooks_due=written.webhooks_due,
        webhooks_leased=written.webhooks_leased,
    )


async def _plan_and_write(
    conn: asyncpg.Connection,
    state: NicheState,
    attributes: Mapping[str, Any],
    write: Callable[[Plan], Awaitable[Written]],
) -> tuple[Plan, Written, int]:
    """Plans on the unlocked read and writes: the write locks the chosen providers in id order
    and writes only if none of them moved since the read. A provider whose revision moved
    (another niche charged it, a top-up, a suspension, a change of its caps, schedule,
    subscriptions or webhook endpoints) is read again (it is locked now, so the read is final)
    and the walk is planned again, so a skipped pick is backfilled; locked rows being final is
    what keeps caps exact under concurrency. A walk that reaches a level read only in part reads
    it in full first. Returns the plan, what was written and the number of statements it took."""
    statements = 0
    while True:
        plan = plan_distribution(state, attributes)
        if plan.needs_full_levels:
            state = await read_full_levels(conn, state, sorted(plan.needs_full_levels))
            statements += 1
            continue
        written = await write(plan)
        statements += 1
        if written.moved is None:
            return plan, written, statements
        moved = written.moved
        stale = {
            c.provider_id
            for candidates in state.candidates.values()
            for c in candidates
            if c.revision != moved.get(c.provider_id, c.revision)
        }
        if not stale:  # a write refused with nothing moved would be refused again, forever
            raise EngineInvariantError(f"the write found providers moved, the plan none: {moved}")
        fresh = await read_providers(conn, sorted(stale), [level.id for level in state.levels])
        statements += 1
        for candidates in state.candidates.values():  # a subscription gone meanwhile is no candidate
            candidates[:] = [
                fresh.get(c.subscription_id, c)
                for c in candidates
                if c.subscription_id in fresh or c.provider_id not in stale
            ]


def _event_count(plan: Plan) -> int:
    return 2 + len(plan.visited) + len(plan.steps)


def _events(
    plan: Plan, *, run_id: uuid.UUID, lead_id: uuid.UUID, niche_id: uuid.UUID, base: int, at: datetime
) -> list[ProgressEvent]:
    """STARTED, then per visited level LEVEL_STARTED and its steps in walk order, then COMPLETED,
    all stamped with the time of the write."""
    events: list[ProgressEvent] = []

    def add(kind: EventType, **fields: Any) -> None:
        events.append(
            ProgressEvent(
                run_id=run_id,
                lead_id=lead_id,
                niche_id=niche_id,
                seq=base + len(events) + 1,
                type=kind,
                at=at,
                **fields,
            )
        )

    add(EventType.STARTED)
    steps = plan.steps
    i = 0
    for level in plan.visited:
        add(EventType.LEVEL_STARTED, level_id=level.id, level_name=level.name)
        while i < len(steps) and steps[i].level.id == level.id:
            step = steps[i]
            common = {
                "level_id": level.id,
                "level_name": level.name,
                "provider_id": step.candidate.provider_id,
            }
            if isinstance(step, Pick):
                add(EventType.ASSIGNED, price_cents=level.price_cents, **common)
            else:
                add(EventType.SKIPPED, reason=step.reason.value, detail=step.detail, **common)
            i += 1
    add(EventType.COMPLETED, outcome=plan.outcome.value)
    return events


def _outcome_json(plan: Plan) -> dict[str, Any]:
    return {
        "status": plan.outcome.value,
        "start_level_id": str(plan.start_level.id) if plan.start_level else None,
        "levels_visited": [str(level.id) for level in plan.visited],
        "assigned": [
            {
                "provider_id": str(p.candidate.provider_id),
                "subscription_id": str(p.candidate.subscription_id),
                "level_id": str(p.level.id),
                "price_cents": p.level.price_cents,
            }
            for p in plan.picks
        ],
        "skipped": [
            {
                "provider_id": str(s.candidate.provider_id),
                "subscription_id": str(s.candidate.subscription_id),
                "level_id": str(s.level.id),
                "reason": s.reason.value,
                "detail": s.detail,
            }
            for s in plan.skips
        ],
    }


def _assigned(plan: Plan, written: Written) -> list[AssignedProvider]:
    return [
        AssignedProvider(
            assignment_id=written.assignment_ids[p.candidate.provider_id],
            provider_id=p.candidate.provider_id,
            subscription_id=p.candidate.subscription_id,
            level_id=p.level.id,
            level_name=p.level.name,
            price_cents=p.level.price_cents,
            balance_after_cents=written.balances_after[p.candidate.provider_id],
        )
        for p in plan.picks
    ]


def _skipped(skip: Skip) -> SkippedProvider:
    return SkippedProvider(
        provider_id=skip.candidate.provider_id,
        subscription_id=skip.candidate.subscription_id,
        level_id=skip.level.id,
        level_name=skip.level.name,
        reason=skip.reason,
        detail=skip.detail,
    )


async def _raise_not_found(conn: asyncpg.Connection, lead_id: uuid.UUID, run_id: uuid.UUID | None) -> None:
    if await conn.fetchval("SELECT 1 FROM leads WHERE id = $1", lead_id) is None:
        raise NotFound("lead", lead_id)
    raise NotFound("distribution run", run_id)


async def _replay(
    conn: asyncpg.Connection, *, run_id: uuid.UUID, lead_id: uuid.UUID, lead: LockedLead
) -> DistributionResult:
    """A redelivered job for a finished run, or one that came before its retry is due: report the
    run's status, do nothing (the sweep sends a waiting run when it is due)."""
    status = await conn.fetchval("SELECT status FROM distribution_runs WHERE id = $1", run_id)
    return DistributionResult(
        run_id=run_id,
        lead_id=lead_id,
        niche_id=lead.niche_id,
        status=RunStatus(status),
        replayed=True,
        deciding_run_id=run_id,
        statements=2,
    )


async def _already_distributed(
    conn: asyncpg.Connection,
    *,
    run_id: uuid.UUID,
    given: bool,
    lead_id: uuid.UUID,
    lead: LockedLead,
) -> DistributionResult:
    """Another run distributed this lead first: take its result and charge nobody. A given run is
    closed with that run's status and a COMPLETED event pointing at it."""
    decider = await conn.fetchrow(
        """SELECT id, status FROM distribution_runs
           WHERE lead_id = $1 AND status = ANY($2::text[])
           ORDER BY finished_at DESC NULLS LAST LIMIT 1""",
        lead_id,
        sorted(ASSIGNING_RUN_STATUSES),
    )
    status = RunStatus(decider["status"]) if decider else RunStatus.SUCCESS
    deciding = decider["id"] if decider else None
    events: list[ProgressEvent] = []
    if given:
        at = await conn.fetchval(
            """UPDATE distribution_runs
               SET status = $2, seq = seq + 1, finished_at = clock_timestamp(),
                   updated_at = clock_timestamp(), attempts = attempts + 1,
                   outcome = jsonb_build_object('status', $2::text, 'duplicate_of', $3::uuid)
               WHERE id = $1 RETURNING finished_at""",
            run_id,
            status.value,
            deciding,
        )
        events.append(
            ProgressEvent(
                run_id=run_id,
                lead_id=lead_id,
                niche_id=lead.niche_id,
                seq=lead.run_seq + 1,
                type=EventType.COMPLETED,
                at=at,
                outcome=status.value,
                detail=f"already distributed by run {deciding}",
            )
        )
    return DistributionResult(
        run_id=run_id if given else (deciding or run_id),
        lead_id=lead_id,
        niche_id=lead.niche_id,
        status=status,
        events=events,
        replayed=True,
        deciding_run_id=deciding,
        statements=3 if given else 2,
    )
