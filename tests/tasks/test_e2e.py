"""Mutation -> worker -> subscribers, across real processes, on real PostgreSQL and Redis."""

import asyncio
import signal

import httpx
import sqlalchemy as sa

from app.db import Database
from app.services import runs
from app.services.audit import SYSTEM
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.invariants import assert_invariants
from tests.tasks.conftest import Stack, WsSubscription, gql, wait_for

PROGRESS = """subscription($run: UUID, $lead: UUID) { distributionProgress(runId: $run, leadId: $lead) {
  runId seq type runStatus levelName providerId priceCents reason outcome snapshot } }"""
NICHE = """subscription($n: UUID!) { nicheActivity(nicheId: $n) { runId seq type outcome } }"""
DISTRIBUTE = (
    """mutation($id: UUID!, $k: String) { distributeLead(leadId: $id, idempotencyKey: $k) { id status } }"""
)


async def _seeded(db: Database) -> tuple[object, object]:
    niche, levels = await make_niche(db, levels=[(4500, 1), (3000, 2)])
    for _ in range(4):
        p = await make_provider(db, balance_cents=100_000)
        for level in levels:
            await subscribe(db, p, level)
    return niche, await make_lead(db, niche)


async def test_subscribers_see_every_step_in_order_on_two_api_processes(
    db: Database, stack: Stack, token: str, lead_lock: tuple
) -> None:
    hold, release = lead_lock
    niche, lead = await _seeded(db)
    first_api, second_api = await stack.api(), await stack.api()
    stack.worker()
    async with WsSubscription(second_api, token, NICHE, {"n": str(niche.id)}) as feed:
        await asyncio.sleep(0.5)  # the feed has no snapshot: give it time to register
        await hold(lead.id)  # the worker will wait for this lock at its first statement
        run = (await gql(first_api, token, DISTRIBUTE, {"id": str(lead.id), "k": "e2e-1"}))["distributeLead"]
        assert run["status"] == "QUEUED"
        async with WsSubscription(first_api, token, PROGRESS, {"run": run["id"]}) as live:
            await asyncio.wait_for(live.first.wait(), 10)
            await release()
            events = await live.wait()
        assert events[0]["snapshot"] is True
        assert events[0]["type"] == "QUEUED"
        types = [e["type"] for e in events]
        assert types[1] == "STARTED"
        assert types[-1] == "COMPLETED"
        assert events[-1]["outcome"] == "SUCCESS"
        assert types.count("ASSIGNED") == 3
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no duplicate
        await wait_for(lambda: _feed_done(feed, run["id"]), timeout=10)
        relayed = [e["seq"] for e in feed.events if e["runId"] == run["id"]]
        assert relayed == list(range(1, seqs[-1] + 1))  # the other API process relayed all of it
    async with WsSubscription(first_api, token, PROGRESS, {"lead": str(lead.id)}) as late:
        after = await late.wait()
    assert len(after) == 1
    assert after[0]["snapshot"] is True
    assert after[0]["type"] == "COMPLETED"
    assert after[0]["runStatus"] == "SUCCESS"
    await assert_invariants(db)
    # the worker process counted it; the API process's /metrics aggregates every process
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{first_api}/metrics")).text
    assert 'lw_distributions_total{outcome="SUCCESS"} 1.0' in text


async def _feed_done(feed: WsSubscription, run_id: str) -> bool:
    return any(e["runId"] == run_id and e["type"] == "COMPLETED" for e in feed.events)


async def test_subscribing_by_lead_before_its_first_run_waits_for_it(
    db: Database, stack: Stack, token: str
) -> None:
    """The race-free order: subscribe first, then distribute. The first message says there is no
    run yet; then the run's own messages follow, to COMPLETED."""
    _, lead = await _seeded(db)
    api = await stack.api()
    stack.worker()
    async with WsSubscription(api, token, PROGRESS, {"lead": str(lead.id)}) as live:
        await asyncio.wait_for(live.first.wait(), 10)
        waiting = live.events[0]
        assert waiting["type"] == "WAITING"
        assert waiting["runId"] is None
        assert waiting["seq"] == 0
        assert waiting["snapshot"] is True
        await asyncio.sleep(0.5)
        assert len(live.events) == 1  # nothing else while there is no run
        run = (await gql(api, token, DISTRIBUTE, {"id": str(lead.id), "k": "first"}))["distributeLead"]
        events = await live.wait()
    rest = events[1:]
    assert rest, events
    assert {e["runId"] for e in rest} == {run["id"]}
    assert rest[-1]["type"] == "COMPLETED"
    assert rest[-1]["outcome"] == "SUCCESS"
    seqs = [e["seq"] for e in rest]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no duplicate
    assert seqs[0] >= 1


class _SendsNothing:
    """A dispatcher whose send is lost: neither the QUEUED event nor the job goes out."""

    inline = False

    async def distribute(self, runs: object, announce: object = ()) -> None:
        return None

    async def notify(self) -> None:
        return None


async def test_a_waiting_subscriber_finds_a_run_whose_announcement_was_lost(
    db: Database, stack: Stack, token: str
) -> None:
    """No event comes for this run: the subscriber re-reads PostgreSQL after a silence."""
    _, lead = await _seeded(db)
    api = await stack.api()
    async with WsSubscription(api, token, PROGRESS, {"lead": str(lead.id)}) as live:
        await asyncio.wait_for(live.first.wait(), 10)
        assert live.events[0]["type"] == "WAITING"
        run = await runs.request_distribution(
            db, actor=SYSTEM, lead_id=lead.id, idempotency_key=None, dispatcher=_SendsNothing()
        )
        await wait_for(lambda: _has_run(live, str(run.id)), timeout=15)
    found = live.events[1]
    assert found["runId"] == str(run.id)
    assert found["snapshot"] is True
    assert found["type"] == "QUEUED"


async def _has_run(live: WsSubscription, run_id: str) -> bool:
    return any(e["runId"] == run_id for e in live.events)


async def test_subscribing_by_a_lead_that_does_not_exist_is_not_found(stack: Stack, token: str) -> None:
    import json
    import uuid

    from app.wsclient import subscription

    api = await stack.api()
    url = api.replace("http://", "ws://") + "/graphql"
    async with subscription(url, token, PROGRESS, {"lead": str(uuid.uuid4())}) as ws:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    # an error raised by the subscription's generator arrives as a result with errors (as before
    # it streamed), an error before it starts as an "error" message: either must say NOT_FOUND
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["NOT_FOUND"], message


async def test_websocket_with_a_bad_token_is_refused(stack: Stack) -> None:
    import json

    import websockets

    base = await stack.api()
    url = base.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": "Bearer lwa_nope"}})
        )
        try:
            await asyncio.wait_for(ws.recv(), 5)
            raise AssertionError("connection was not refused")
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None
            assert closed.rcvd.code == 4403


async def _run_status(db: Database, run_id: str) -> str:
    async with db.engine.connect() as conn:
        return str(
            (
                await conn.execute(
                    sa.text("SELECT status FROM distribution_runs WHERE id = :id"), {"id": run_id}
                )
            ).scalar_one()
        )


async def a_backend_waits_on_a_lock(db: Database) -> bool:
    """True once a session (the worker's engine transaction) is blocked on a row lock."""
    async with db.engine.connect() as conn:
        return bool(
            (
                await conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    )
                )
            ).scalar_one()
        )


async def test_a_killed_workers_job_completes_once(
    db: Database, stack: Stack, token: str, lead_lock: tuple
) -> None:
    hold, release = lead_lock
    _, lead = await _seeded(db)
    api = await stack.api()
    doomed = stack.worker()
    stack.scheduler()
    await hold(lead.id)
    run = (await gql(api, token, DISTRIBUTE, {"id": str(lead.id)}))["distributeLead"]

    await wait_for(lambda: a_backend_waits_on_a_lock(db), timeout=15)
    stack.kill(doomed)  # mid-run: its transaction dies, its message stays unacknowledged
    await release()
    stack.worker()
    await wait_for(lambda: _is(db, run["id"], "SUCCESS"), timeout=30)
    async with db.engine.connect() as conn:
        assigned = (await conn.execute(sa.text("SELECT count(*) FROM assignments"))).scalar_one()
    assert assigned == 3
    await asyncio.sleep(3)  # a late redelivery must not charge anyone again
    async with db.engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM assignments"))).scalar_one() == 3
    await assert_invariants(db)


async def _is(db: Database, run_id: str, status: str) -> bool:
    return await _run_status(db, run_id) == status


async def test_database_failure_is_retried_dead_lettered_and_retried_by_hand(
    db: Database, stack: Stack, token: str
) -> None:
    _, lead = await _seeded(db)
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(
            """CREATE FUNCTION lw_fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'injected database failure'; END; $$"""
        )
        await conn.exec_driver_sql(
            """CREATE CONSTRAINT TRIGGER lw_fail_at_commit AFTER INSERT ON ledger_entries
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.kind = 'CHARGE')
               EXECUTE FUNCTION lw_fail_at_commit()"""
        )
    try:
        api = await stack.api()
        stack.worker()
        stack.scheduler()
        run = (await gql(api, token, DISTRIBUTE, {"id": str(lead.id)}))["distributeLead"]
        await wait_for(lambda: _is(db, run["id"], "FAILED"), timeout=30)
        dead = (await gql(api, token, "{ deadLetters { id attempts error } }"))["deadLetters"]
        assert [d["id"] for d in dead] == [run["id"]]
        assert dead[0]["attempts"] == 3
        assert "injected database failure" in dead[0]["error"]
        status = (
            await gql(
                api,
                token,
                "query($id: UUID!) { lead(id: $id) { status distributionAttempts } }",
                {"id": str(lead.id)},
            )
        )["lead"]
        assert status == {"status": "FAILED", "distributionAttempts": 3}
    finally:
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("DROP TRIGGER lw_fail_at_commit ON ledger_entries")
            await conn.exec_driver_sql("DROP FUNCTION lw_fail_at_commit()")
    retried = (
        await gql(
            api, token, "mutation($id: UUID!) { retryDistribution(runId: $id) { status } }", {"id": run["id"]}
        )
    )["retryDistribution"]
    assert retried["status"] in ("QUEUED", "SUCCESS")
    await wait_for(lambda: _is(db, run["id"], "SUCCESS"), timeout=30)
    await assert_invariants(db)


async def test_a_batch_of_200_leads_reports_progress_to_the_end(
    db: Database, stack: Stack, token: str
) -> None:
    niche, levels = await make_niche(db, levels=[(100, 2)])
    for _ in range(5):
        await subscribe(db, await make_provider(db, balance_cents=1_000_000), levels[0])
    for _ in range(200):
        await make_lead(db, niche)
    api = await stack.api()
    stack.worker()
    batch = (
        await gql(
            api,
            token,
            "mutation($n: UUID!) { distributeLeads(nicheId: $n) { id total } }",
            {"n": str(niche.id)},
        )
    )["distributeLeads"]
    assert batch["total"] == 200
    query = """subscription($b: UUID!) { batchProgress(batchId: $b) {
      total processed assigned noEligible failed ratePerSecond etaSeconds done } }"""
    async with WsSubscription(api, token, query, {"b": batch["id"]}) as progress:
        events = await progress.wait(timeout=90)
    assert events[-1]["done"] is True
    assert events[-1]["processed"] == 200
    assert events[-1]["assigned"] == 200
    processed = [e["processed"] for e in events]
    assert processed == sorted(processed)
    assert len(events) >= 2
    await assert_invariants(db)


async def test_cli_distribute_batch_shows_progress_and_a_summary(
    db: Database, stack: Stack, token: str
) -> None:
    import subprocess
    import sys

    niche, (level,) = await make_niche(db, levels=[(250, 1)])
    for _ in range(3):
        await subscribe(db, await make_provider(db, balance_cents=100_000), level)
    for _ in range(20):
        await make_lead(db, niche)
    api = await stack.api()
    stack.worker()
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "app.cli",
            "distribute-batch",
            "--niche",
            str(niche.id),
            "--status",
            "APPROVED",
            "--url",
            api,
            "--token",
            token,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=stack.env(COLUMNS="120"),
    )
    assert done.returncode == 0, done.stderr
    assert "batch summary" in done.stdout
    summary = done.stdout.split("batch summary")[1]
    assert "20" in summary
    assert "$50.00" in summary  # 20 leads x $2.50


async def test_sigterm_drains_the_job_in_flight(
    db: Database, stack: Stack, token: str, lead_lock: tuple
) -> None:
    """A worker asked to stop (SIGTERM, as a supervisor sends it) finishes the job it is running
    before it exits; no other worker exists here to pick the job up."""
    hold, release = lead_lock
    _, lead = await _seeded(db)
    api = await stack.api()
    worker = stack.worker()
    await hold(lead.id)
    run = (await gql(api, token, DISTRIBUTE, {"id": str(lead.id)}))["distributeLead"]

    await wait_for(lambda: a_backend_waits_on_a_lock(db), timeout=15)
    worker.send_signal(signal.SIGTERM)
    await asyncio.sleep(1)
    assert worker.poll() is None  # still draining
    await release()
    await wait_for(lambda: _is(db, run["id"], "SUCCESS"), timeout=30)
    assert await asyncio.to_thread(worker.wait, 40) == 0
