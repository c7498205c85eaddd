"""distributeLead's request: one statement that replays a key's run, refuses what cannot be
distributed, or queues a run with its audit entry. Concurrent requests with one key make one run."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence

import pytest
import sqlalchemy as sa

from app.db import Database
from app.errors import Conflict, LeadNotDistributable, NotFound
from app.models.distribution import RunStatus
from app.progress.events import ProgressEvent
from app.schema import types as schema_types
from app.services import runs
from app.services.audit import SYSTEM
from app.services.dispatch import RunJob
from tests.factories import make_lead, make_niche


class Queue:
    """Records what would be sent to the workers (the engine is not run here)."""

    inline = False

    def __init__(self) -> None:
        self.sent: list[uuid.UUID] = []

    async def distribute(self, runs: Sequence[RunJob], announce: Sequence[ProgressEvent] = ()) -> None:
        self.sent += [run.run_id for run in runs]

    async def notify(self) -> None:
        pass

    async def wake_webhooks(self) -> None:
        pass


async def _request(db: Database, queue: Queue, lead_id: uuid.UUID, key: str | None) -> uuid.UUID:
    run = await runs.request_distribution(
        db, actor=SYSTEM, lead_id=lead_id, idempotency_key=key, dispatcher=queue
    )
    assert run.status == RunStatus.QUEUED and run.seq == 1
    return run.id


async def _count(db: Database, sql: str, **params: object) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(sa.text(sql), params)).scalar_one())


async def test_ten_concurrent_requests_with_one_key_make_one_run(db: Database) -> None:
    niche, _ = await make_niche(db)
    lead = await make_lead(db, niche)
    queue = Queue()
    run_ids = await asyncio.gather(*(_request(db, queue, lead.id, "same-key") for _ in range(10)))
    assert len(set(run_ids)) == 1
    assert queue.sent == [run_ids[0]]  # sent once, by the request that created it
    assert await _count(db, "SELECT count(*) FROM distribution_runs WHERE lead_id = :l", l=lead.id) == 1
    audited = await _count(
        db,
        "SELECT count(*) FROM audit_log WHERE action = 'DISTRIBUTION_REQUESTED' AND entity_id = :l "
        "AND details ->> 'run_id' = :r AND details ->> 'idempotency_key' = 'same-key'",
        l=lead.id,
        r=str(run_ids[0]),
    )
    assert audited == 1


async def test_refusals_write_nothing(db: Database) -> None:
    niche, _ = await make_niche(db)
    lead, other = await make_lead(db, niche), await make_lead(db, niche)
    queue = Queue()
    await _request(db, queue, lead.id, "k")
    before = await _count(db, "SELECT count(*) FROM distribution_runs") + await _count(
        db, "SELECT count(*) FROM audit_log"
    )
    with pytest.raises(Conflict):
        await _request(db, queue, other.id, "k")
    with pytest.raises(NotFound):
        await _request(db, queue, uuid.uuid4(), None)
    async with db.connect() as conn:
        await conn.execute(sa.text("UPDATE leads SET status = 'REJECTED' WHERE id = :l"), {"l": other.id})
    with pytest.raises(LeadNotDistributable):
        await _request(db, queue, other.id, None)
    after = await _count(db, "SELECT count(*) FROM distribution_runs") + await _count(
        db, "SELECT count(*) FROM audit_log"
    )
    assert after == before and len(queue.sent) == 1


async def test_a_new_run_is_answered_as_it_is_stored(db: Database) -> None:
    """The QueuedRun made from the request statement's row reads, field for field of the GraphQL
    type, as the run read back from the table."""
    niche, _ = await make_niche(db)
    queue = Queue()
    for key in (None, "stored-key"):
        lead = await make_lead(db, niche)
        answered = await runs.request_distribution(
            db, actor=SYSTEM, lead_id=lead.id, idempotency_key=key, dispatcher=queue
        )
        stored = await runs.get_run(db, answered.id, actor=SYSTEM)
        fields = [f.name for f in dataclasses.fields(schema_types.DistributionRun) if f.init]
        assert {f: getattr(answered, f) for f in fields} == {f: getattr(stored, f) for f in fields}
        assert (answered.updated_at, answered.enqueued_at) == (stored.updated_at, stored.enqueued_at)
