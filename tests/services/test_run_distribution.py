"""run_distribution, as a worker calls it: the job carries the run's lead, the run row decides."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from app.db import Database
from app.models.distribution import RunStatus
from app.progress.events import ProgressEvent
from app.progress.publish import NullPublisher
from app.services import execution, runs
from app.services.audit import SYSTEM
from app.services.dispatch import RunJob
from app.settings import Environment, Settings
from tests.factories import make_lead, make_niche, make_provider, subscribe

SETTINGS = Settings(environment=Environment.TEST)


class Held:
    """A dispatcher that sends nothing: the test runs the job itself."""

    inline = False

    async def distribute(self, runs: Sequence[RunJob], announce: Sequence[ProgressEvent] = ()) -> None:
        pass

    async def notify(self) -> None:
        pass

    async def wake_webhooks(self) -> None:
        pass


async def _queued_run(db: Database) -> tuple[uuid.UUID, uuid.UUID]:
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    await subscribe(db, await make_provider(db, balance_cents=1_000), level)
    lead = await make_lead(db, niche)
    run = await runs.request_distribution(
        db, actor=SYSTEM, lead_id=lead.id, idempotency_key=None, dispatcher=Held()
    )
    return run.id, lead.id


async def _run(db: Database, run_id: uuid.UUID, lead_id: uuid.UUID) -> execution.Execution:
    return await execution.run_distribution(
        db, run_id=run_id, lead_id=lead_id, settings=SETTINGS, publisher=NullPublisher()
    )


async def _state(db: Database, run_id: uuid.UUID) -> tuple[str, int]:
    async with db.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT r.status, (SELECT count(*) FROM assignments a WHERE a.lead_id = r.lead_id) "
                    "FROM distribution_runs r WHERE r.id = :id"
                ),
                {"id": run_id},
            )
        ).one()
    return row[0], row[1]


async def test_a_job_that_comes_before_its_retry_is_due_does_nothing(db: Database) -> None:
    run_id, lead_id = await _queued_run(db)
    async with db.engine.begin() as conn:  # as after a failed attempt: waiting out its backoff
        await conn.execute(
            sa.text(
                "UPDATE distribution_runs SET next_attempt_at = now() + interval '1 hour' WHERE id = :id"
            ),
            {"id": run_id},
        )
    early = await _run(db, run_id, lead_id)
    assert early.result is not None and early.result.replayed and early.events == []
    assert await _state(db, run_id) == (RunStatus.QUEUED, 0)
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE distribution_runs SET next_attempt_at = now() - interval '1 second' WHERE id = :id"
            ),
            {"id": run_id},
        )
    due = await _run(db, run_id, lead_id)
    assert due.result is not None and not due.result.replayed
    assert await _state(db, run_id) == (RunStatus.SUCCESS, 1)


async def test_a_second_delivery_of_a_job_charges_nobody(db: Database) -> None:
    run_id, lead_id = await _queued_run(db)
    first = await _run(db, run_id, lead_id)
    assert first.result is not None and len(first.result.assigned) == 1
    again = await _run(db, run_id, lead_id)  # the broker redelivered it
    assert again.result is not None and again.result.replayed and again.events == []
    assert await _state(db, run_id) == (RunStatus.SUCCESS, 1)


async def test_a_job_for_an_unknown_run_does_nothing(db: Database) -> None:
    _, lead_id = await _queued_run(db)
    for run_id, lead in ((uuid.uuid4(), lead_id), (uuid.uuid4(), uuid.uuid4())):
        done = await _run(db, run_id, lead)
        assert done.result is None and done.events == []
