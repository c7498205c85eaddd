"""The sender's statements on the outbox, each one short autocommit statement (no transaction is
held while a request is in flight): a turn records what was sent (attempts, new states, failure
counts, the endpoints released, the disabled ones audited) and claims endpoints with due
deliveries, in one round trip; then the hold of what the endpoints it disabled had waiting, and
the sweep's check.

A claim holds an endpoint for one sender at a time (its lock), which sends its due deliveries one
request at a time, in creation order (a failing endpoint's never-tried ones before its retries): a
slow or dead endpoint holds only its own, and a failing one waits between tries (its retry_at). (A
distribution's deliveries to healthy endpoints skip the claim: leased to its worker, sent by its
sender at once, recorded by its turns.) Raw asyncpg with named parameters (app/engine/sql.py): these
run for every batch of sends, where SQLAlchemy's per-statement work would be most of their cost."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from app.db import Database, driver_connection
from app.engine.sql import compile_named
from app.models.audit import ActorType, AuditAction
from app.models.webhooks import TEST_EVENT, AttemptOutcome, DeliveryStatus, DisabledReason
from app.services.webhooks.outbound import Answer
from app.settings import Settings

PENDING = DeliveryStatus.PENDING.value

# A sender holds an endpoint with a session advisory lock of its own connection (class LOCK_CLASS,
# key: a hash of the endpoint's id): no row is written to claim or release it, and a sender that
# dies (its connection closed) lets go of its endpoints at once. Two endpoints whose ids hash
# alike only take turns.
LOCK_CLASS = 0x5748  # "WH"
# due deliveries a turn looks at, oldest first (their endpoints are the turn's candidates)
DUE_SCAN = 2000

# An endpoint's failures in a row once a run is recorded (restarting at its last success), and
# whether that disables it: from the endpoint's row as it is when locked (`e`, `c`: recorded below)
FAILURES_AFTER = "CASE WHEN c.reset THEN 0 ELSE e.consecutive_failures END + c.failures"
DISABLES = f"e.enabled AND {FAILURES_AFTER} >= :disable_after::int"
# From its second failure in a row, an endpoint is tried again only after a wait (its retry_at):
# the first retry delay, doubled with each further failure, at most :backoff_max seconds; jittered
# as retries are. One attempt per wait, not one per waiting delivery: an endpoint that is down for
# a minute costs it a few failures, not one for every lead sold meanwhile (which disabled it in
# seconds under load). A single failure waits for nothing: the buyer refusing one lead (a 400 for
# its content) is not the endpoint failing, and holds none of the others.
WAIT_SECONDS = (
    "CASE WHEN {after} >= 2 THEN least((:delays::float8[])[1] * power(2, least({after}, 32) - 2),"
    " :backoff_max::float8) ELSE 0 END"
)
# A claim takes an endpoint once its wait is over, or for a test message (sent whatever the state)
READY = "({e}.retry_at IS NULL OR {e}.retry_at <= now())"

# One statement per turn of a sender (one round trip):
#
# Record what finished: the attempts logged (in the delivery's row); each delivery DELIVERED, or
# retried after its delay (± jitter; held if its endpoint was disabled meanwhile), or FAILED after
# its last attempt (a test message gets one); each endpoint's consecutive failures counted (its row
# written only when the count changes), the endpoint disabled, audited and flagged at the threshold, and its
# lock released (a claimed endpoint's: leased deliveries are sent without one). An endpoint failing
# again waits (retry_at), and its waiting deliveries due sooner, the ones just tried included, wait
# for the wait's end (moved in this statement, whose own scan of due deliveries below still sees
# them: the next turns' scans do not, until the wait ends). Leased deliveries given back unsent are
# due now, or at their endpoint's wait's end.
#
# Then claim: endpoints with due deliveries that this sender is not sending to (a lock it holds
# would be taken again: a session's advisory locks stack) nor has just recorded (those come back next
# turn), longest-waiting first, that it can lock (others are being sent to); for each,
# its first due deliveries in creation order (a failing endpoint's never-tried ones before its
# retries: a retry failing again says little about the endpoint, and would make it wait again). A
# disabled endpoint, or one whose wait is not over, is claimed only for a test message (a disabled
# one's other deliveries are held: next_attempt_at NULL). An endpoint whose deliveries went
# meanwhile comes back with none (d.id NULL), and is released by the next turn.
#
# Rows: the claimed ('claim'), the endpoints it disabled and audited ('flag'), and those it recorded
# ('release').
TURN = compile_named(f"""
-- materialized: inlined, the unnest of the seven arrays was run again for every delivery row the
-- update joined it to (a plan made on a young table's statistics: quadratic in the turn's size)
WITH r AS MATERIALIZED (
    SELECT * FROM unnest(:delivery_ids::uuid[], :attempted_at::timestamptz[], :outcomes::text[],
                         :status_codes::int[], :latencies::float8[], :errors::text[], :bodies::text[])
        AS r (delivery_id, at, outcome, status_code, latency_ms, error, body)
),
-- each recorded endpoint that failed: its wait, from its failures in a row after this turn as its
-- row is seen here (runs without a failure, most of a burst's, read no row here), jittered once
-- (counted again below on the locked row, which decides: two senders recording one endpoint at once
-- can make the wait a step shorter, or leave the deliveries just tried waiting for one the endpoint
-- does not get)
waits AS MATERIALIZED (
    SELECT u.id,
           CASE WHEN w.seconds > 0
                THEN now() + w.seconds * (1 + :jitter::float8 * (2 * random() - 1)) * interval '1 second'
           END AS retry_at
    FROM unnest(:endpoint_ids::uuid[], :resets::bool[], :failures::int[]) AS u (id, reset, failures)
    CROSS JOIN LATERAL (
        SELECT CASE WHEN u.reset THEN 0 ELSE e.consecutive_failures END + u.failures AS after
        FROM webhook_endpoints e WHERE e.id = u.id
    ) f
    CROSS JOIN LATERAL (SELECT {WAIT_SECONDS.format(after="f.after")} AS seconds) w
    WHERE u.failures > 0  -- applied to the runs, before any endpoint is read
),
deliveries AS (
    UPDATE webhook_deliveries d
    SET attempts = d.attempts + 1,
        attempt_log = d.attempt_log || jsonb_build_array(jsonb_build_object(
            'at', to_char(r.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'outcome', r.outcome,
            'status_code', r.status_code, 'latency_ms', r.latency_ms, 'error', r.error,
            'response_body', r.body)),
        last_attempt_at = r.at,
        last_status_code = r.status_code,
        last_error = r.error,
        status = CASE WHEN r.outcome = '{AttemptOutcome.SUCCESS}' THEN '{DeliveryStatus.DELIVERED}'
                      WHEN d.event_type = '{TEST_EVENT}'
                           OR d.attempts + 1 > cardinality(:delays::float8[]) THEN '{DeliveryStatus.FAILED}'
                      ELSE '{PENDING}' END,
        delivered_at = CASE WHEN r.outcome = '{AttemptOutcome.SUCCESS}' THEN r.at ELSE d.delivered_at END,
        next_attempt_at = CASE
            WHEN r.outcome = '{AttemptOutcome.SUCCESS}' OR d.event_type = '{TEST_EVENT}'
                 OR d.attempts + 1 > cardinality(:delays::float8[]) OR NOT e.enabled THEN NULL
            -- its own retry, or its endpoint's wait's end if later
            ELSE greatest(now() + (:delays::float8[])[d.attempts + 1]
                                  * (1 + :jitter::float8 * (2 * random() - 1)) * interval '1 second',
                          w.retry_at) END
    FROM r, webhook_endpoints e LEFT JOIN waits w ON w.id = e.id
    -- = ANY: the primary key, whatever the plan makes of the arrays' sizes (a turn's plan is generic).
    -- The status as a parameter: a generic plan cannot read the partial indexes of PENDING rows
    -- for it, so it never scans every waiting delivery (a failing endpoint's can be thousands).
    WHERE d.id = ANY(:delivery_ids::uuid[]) AND d.id = r.delivery_id AND e.id = d.endpoint_id
      AND d.status = :pending::text
    RETURNING d.id
),
counted AS MATERIALIZED (
    SELECT u.id, u.reset, u.failures,
           CASE WHEN u.release THEN pg_advisory_unlock({LOCK_CLASS}, hashtext(u.id::text)) END AS released
    FROM unnest(:endpoint_ids::uuid[], :resets::bool[], :failures::int[], :releases::bool[])
        AS u (id, reset, failures, release)
    -- after the deliveries' update, not before (an unreferenced one runs last): another sender
    -- that takes the endpoint the moment it is released must find them changed, or locked
    CROSS JOIN (SELECT count(*) FROM deliveries) AS updated_first
),
-- the endpoints whose count changes, locked in id order (the runs come sorted): senders record
-- one endpoint at once (leased deliveries go without its lock), so each counts on the row as the
-- others left it (an UPDATE reads the row it waited for), and two never wait on each other. A
-- primary-key probe each, never a scan of the endpoints (as in candidates).
changing AS MATERIALIZED (
    SELECT c.id, c.reset, c.failures
    FROM counted c
    CROSS JOIN LATERAL (
        SELECT e.id FROM webhook_endpoints e
        WHERE e.id = c.id AND (c.failures > 0 OR (c.reset AND e.consecutive_failures <> 0))
        FOR NO KEY UPDATE
    ) e
),
recorded AS (
    UPDATE webhook_endpoints e
    SET consecutive_failures = {FAILURES_AFTER},
        enabled = e.enabled AND NOT ({DISABLES}),
        disabled_reason = CASE WHEN {DISABLES} THEN '{DisabledReason.FAILING}' ELSE e.disabled_reason END,
        disabled_at = CASE WHEN {DISABLES} THEN now() ELSE e.disabled_at END,
        updated_at = CASE WHEN {DISABLES} THEN now() ELSE e.updated_at END,
        -- the wait as `waits` set it, when the count on the locked row agrees that one is due
        -- (a disabled endpoint, tried by a test message, is not waiting for anything)
        retry_at = CASE WHEN e.enabled AND {FAILURES_AFTER} >= 2 AND NOT ({DISABLES}) THEN w.retry_at END,
        -- its waiting deliveries are held by the sender's next statements (HOLD), or by the sweep
        hold_pending = e.hold_pending OR {DISABLES}
    FROM changing c LEFT JOIN waits w ON w.id = c.id
    WHERE e.id = ANY(:endpoint_ids::uuid[]) AND e.id = c.id
    -- disabled by this statement: now() is its transaction's start
    RETURNING e.id, e.provider_id,
              NOT e.enabled AND e.disabled_reason = '{DisabledReason.FAILING}' AND e.disabled_at = now()
                  AS disable,
              e.consecutive_failures AS failures, e.retry_at
),
waiting AS (SELECT id, retry_at FROM recorded WHERE retry_at IS NOT NULL),
-- an endpoint disabled here is audited here: a disabling is never committed without its entry
disabled AS (
    INSERT INTO audit_log (action, actor_type, entity_type, entity_id, details)
    SELECT '{AuditAction.WEBHOOK_ENDPOINT_DISABLED}', '{ActorType.SYSTEM}', 'webhook_endpoint', id,
           jsonb_build_object('reason', '{DisabledReason.FAILING}', 'consecutive_failures', failures,
                              'provider_id', provider_id)
    FROM recorded WHERE disable
),
-- leased deliveries their sender gave back unsent (its endpoint failed, or it stopped): due now, or
-- when their endpoint is tried next (as it was before this statement, or as it is after it)
returned AS (
    UPDATE webhook_deliveries d SET next_attempt_at = greatest(now(), e.retry_at, w.retry_at)
    FROM webhook_endpoints e LEFT JOIN waits w ON w.id = e.id
    WHERE d.id = ANY(:returned_ids::uuid[]) AND d.status = :pending::text AND d.next_attempt_at IS NOT NULL
      AND e.id = d.endpoint_id
),
-- the other waiting deliveries of the endpoints that now wait, due before the wait ends, moved to
-- its end (a lease, later than now, only ever moved later: never claimed while it lasts). Rows
-- another turn has locked are skipped (it is recording them, or claiming them to send).
moved AS (
    UPDATE webhook_deliveries d SET next_attempt_at = m.retry_at
    FROM (SELECT w.retry_at, x.id
          FROM waiting w
          CROSS JOIN LATERAL (
              SELECT x.id FROM webhook_deliveries x
              WHERE x.endpoint_id = w.id AND x.status = '{PENDING}' AND x.next_attempt_at < w.retry_at
                AND x.id <> ALL(:delivery_ids::uuid[]) AND x.id <> ALL(:returned_ids::uuid[])
              FOR NO KEY UPDATE SKIP LOCKED
          ) x) m
    WHERE d.id = m.id
),
due AS (
    -- the oldest due deliveries, by an ordered index scan: a scan of the whole due range would
    -- also visit every delivery sent since the last vacuum (a status change leaves the old
    -- version's index entry behind), and an index scan marks those dead for the next turns
    SELECT endpoint_id, min(next_attempt_at) AS oldest, bool_or(event_type = '{TEST_EVENT}') AS test
    FROM (SELECT endpoint_id, next_attempt_at, event_type FROM webhook_deliveries
          WHERE status = '{PENDING}' AND next_attempt_at <= now()
          ORDER BY next_attempt_at LIMIT {DUE_SCAN}) oldest_due
    GROUP BY endpoint_id
),
candidates AS (
    SELECT e.id, e.url, e.enabled, {READY.format(e="e")} AS ready, e.consecutive_failures > 0 AS failing,
           e.secret, e.previous_secret, e.previous_secret_expires_at
    FROM due
    -- one primary-key probe per endpoint with due deliveries (LIMIT keeps the planner from making
    -- it a join: one made on a young table's statistics rescanned `due` for every endpoint). The
    -- probe has the key alone: given `deleted_at IS NULL` too, PostgreSQL 18 took the partial index
    -- of live endpoints by provider on a young table, and read every live endpoint for each probe
    CROSS JOIN LATERAL (SELECT * FROM webhook_endpoints e WHERE e.id = due.endpoint_id LIMIT 1) e
    WHERE e.deleted_at IS NULL AND e.id <> ALL(:sending::uuid[])
      AND ((e.enabled AND {READY.format(e="e")}) OR due.test)
    ORDER BY due.oldest
    OFFSET 0  -- kept apart: the lock below is taken only on the rows it returns
),
locked AS MATERIALIZED (
    SELECT * FROM candidates
    WHERE pg_try_advisory_lock({LOCK_CLASS}, hashtext(candidates.id::text))
    LIMIT :slots
)
SELECT 'claim' AS kind, l.id AS endpoint_id, l.url, l.secret,
       CASE WHEN l.previous_secret_expires_at > now() THEN l.previous_secret END AS previous_secret,
       d.id AS delivery_id, d.payload::text AS body, NULL::uuid AS provider_id, NULL::int AS failures
FROM locked l
LEFT JOIN LATERAL (
    SELECT d.id, d.payload, d.created_at
    FROM webhook_deliveries d
    WHERE d.endpoint_id = l.id AND d.status = '{PENDING}' AND d.next_attempt_at <= now()
      AND ((l.enabled AND l.ready) OR d.event_type = '{TEST_EVENT}')
    ORDER BY l.failing AND d.attempts > 0, d.created_at, d.id
    LIMIT :per_endpoint
    -- An advisory lock is released when its statement runs, not when it commits: the sender that
    -- let go of this endpoint may not have committed what it sent yet. Its rows are then locked
    -- (skipped), or, committed since this statement began, re-read as they are now (no longer
    -- PENDING): never sent twice for that.
    FOR NO KEY UPDATE OF d SKIP LOCKED
) d ON true
UNION ALL
SELECT 'flag', id, NULL, NULL, NULL, NULL, NULL, provider_id, failures FROM recorded WHERE disable
UNION ALL
SELECT 'release', id, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM counted
""")

# After a turn disabled endpoints (and audited it): their waiting deliveries held, unless an endpoint
# was enabled again meanwhile (that made its backlog due). Test messages are not held: they are
# sent whatever the endpoint's state. A statement of its own after the turn's commit, that waits
# on no lock: a re-enabling (and a delete) locks the endpoint's row, then its deliveries; a turn
# locks deliveries, then endpoint rows. It skips the rows another transaction holds and says
# whether it held all it found (else it is tried again). In REPEATABLE READ (hold()), so that a
# re-enabling committed after its snapshot fails it rather than having what it made due held.
HOLD = compile_named(f"""
WITH waiting AS MATERIALIZED (
    SELECT d.id FROM webhook_deliveries d
    WHERE d.endpoint_id = ANY(:endpoint_ids::uuid[]) AND d.status = '{PENDING}'
      AND d.next_attempt_at IS NOT NULL AND d.event_type <> '{TEST_EVENT}'
      AND EXISTS (SELECT 1 FROM webhook_endpoints e
                  WHERE e.id = d.endpoint_id AND NOT e.enabled
                    AND e.disabled_reason = '{DisabledReason.FAILING}')
),
locked AS MATERIALIZED (
    SELECT d.id FROM webhook_deliveries d WHERE d.id IN (SELECT id FROM waiting)
    FOR NO KEY UPDATE SKIP LOCKED
),
held AS (
    UPDATE webhook_deliveries d SET next_attempt_at = NULL FROM locked WHERE d.id = locked.id RETURNING 1
)
SELECT (SELECT count(*) FROM waiting) = (SELECT count(*) FROM held) AS complete, now() AS at
""")

# Once held (committed): the endpoints' mark, set by the turn that disabled them, cleared, unless a
# later disabling set it again (enabled and disabled since). Skipped when another transaction holds
# the row (it stays marked: the sweep holds again, finding nothing)
HELD = compile_named("""
UPDATE webhook_endpoints SET hold_pending = false
WHERE id IN (SELECT id FROM webhook_endpoints
             WHERE id = ANY(:endpoint_ids::uuid[]) AND hold_pending AND disabled_at <= :held_at::timestamptz
             FOR NO KEY UPDATE SKIP LOCKED)
""")

# Endpoints a turn disabled whose hold has not run for `stale_after` (the sender died between the
# two): the sweep holds their deliveries
STRANDED = compile_named("""
SELECT id FROM webhook_endpoints
WHERE hold_pending AND disabled_at <= now() - :stale_after::float8 * interval '1 second'
""")

# The sweep: is there due work? Retries and ended leases (a worker died) once due (and their
# endpoint's wait over); other first sends only once older than stale_after, since their wake may
# just be on its way (redeliveries and a re-enabled endpoint's backlog, due after their creation,
# may get a second wake). A sender already sending to the endpoint (its lock) makes the wake cost
# one claim that finds it taken.
NEEDED = compile_named(f"""
SELECT EXISTS (
    SELECT 1
    FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
    WHERE d.status = '{PENDING}' AND d.next_attempt_at <= now()
      AND (d.attempts > 0 OR d.next_attempt_at > d.created_at
           OR d.next_attempt_at <= now() - :stale_after::float8 * interval '1 second')
      AND ((e.enabled AND {READY.format(e="e")}) OR d.event_type = '{TEST_EVENT}')
)
""")


@dataclass
class Claimed:
    """An endpoint this sender holds, and its deliveries to send now, in the order to send them."""

    endpoint_id: uuid.UUID
    url: str
    secrets: list[str]
    deliveries: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # (id, body)


@dataclass(frozen=True)
class Sent:
    delivery_id: uuid.UUID
    at: datetime
    answer: Answer


@dataclass
class EndpointRun:
    """What one claim of an endpoint sent, in order (possibly nothing); or, not `held`, what a
    sender sent of the deliveries leased to it, and those it gives back unsent (`returned`)."""

    endpoint_id: uuid.UUID
    sent: list[Sent] = field(default_factory=list)
    held: bool = True  # the endpoint's lock, released when the run is recorded
    returned: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True)
class Flagged:
    endpoint_id: uuid.UUID
    provider_id: uuid.UUID
    failures: int


async def turn(
    conn: asyncpg.Connection,
    *,
    runs: Sequence[EndpointRun],
    slots: int,
    settings: Settings,
    sending: Collection[uuid.UUID] = (),
) -> tuple[list[Claimed], list[Flagged]]:
    """Records the finished runs (their endpoints released) and claims up to `slots` endpoints, on
    the sender's own connection (its session holds the endpoints' locks); `sending`: the endpoints
    it is sending to besides the runs' (requests in flight), not to be claimed.
    An endpoint's failure count restarts at its last success; the endpoints it disables (audited
    in the same statement) are returned, their waiting deliveries to be held by `hold`."""
    runs = merged(runs)
    sent = [s for run in runs for s in run.sent]
    resets, failures = [], []
    for run in runs:
        after_success = 0
        succeeded = False
        for s in run.sent:
            if s.answer.ok:
                succeeded, after_success = True, 0
            else:
                after_success += 1
        resets.append(succeeded)
        failures.append(after_success)
    rows = await conn.fetch(
        TURN.text,
        *TURN.args(
            {
                "delivery_ids": [s.delivery_id for s in sent],
                "attempted_at": [s.at for s in sent],
                "outcomes": [s.answer.outcome.value for s in sent],
                "status_codes": [s.answer.status_code for s in sent],
                "latencies": [s.answer.latency_ms for s in sent],
                "errors": [s.answer.error for s in sent],
                "bodies": [s.answer.body for s in sent],
                "delays": list(settings.webhook_retry_delays_seconds),
                "jitter": settings.webhook_retry_jitter,
                "endpoint_ids": [run.endpoint_id for run in runs],
                "sending": [run.endpoint_id for run in runs] + list(sending),
                "resets": resets,
                "failures": failures,
                "releases": [run.held for run in runs],
                "returned_ids": [d for run in runs for d in run.returned],
                "disable_after": settings.webhook_disable_after_failures,
                "backoff_max": settings.webhook_endpoint_backoff_max_seconds,
                "slots": slots,
                "per_endpoint": settings.webhook_batch_size,
                "pending": PENDING,
            }
        ),
    )
    claimed: dict[uuid.UUID, Claimed] = {}
    flagged: list[Flagged] = []
    for row in rows:
        if row["kind"] == "flag":
            flagged.append(Flagged(row["endpoint_id"], row["provider_id"], row["failures"]))
            continue
        if row["kind"] == "release":
            continue
        one = claimed.get(row["endpoint_id"])
        if one is None:
            keys = [row["secret"]] + ([row["previous_secret"]] if row["previous_secret"] else [])
            one = claimed[row["endpoint_id"]] = Claimed(row["endpoint_id"], row["url"], keys)
        if row["delivery_id"] is not None:
            one.deliveries.append((row["delivery_id"], row["body"]))
    return list(claimed.values()), flagged


def merged(runs: Sequence[EndpointRun]) -> list[EndpointRun]:
    """One run per endpoint, in id order: a sender can have a claim of an endpoint and leased
    deliveries to it end in the same turn (its attempts in the order they were made, its failures
    counted once)."""
    by_endpoint: dict[uuid.UUID, EndpointRun] = {}
    runs = sorted(runs, key=lambda run: run.endpoint_id)  # the order their rows are locked in
    for run in runs:
        seen = by_endpoint.get(run.endpoint_id)
        if seen is None:
            by_endpoint[run.endpoint_id] = run
            continue
        by_endpoint[run.endpoint_id] = EndpointRun(
            run.endpoint_id,
            sorted(seen.sent + run.sent, key=lambda s: s.at),
            seen.held or run.held,
            seen.returned + run.returned,
        )
    return list(by_endpoint.values())


async def hold(conn: asyncpg.Connection, endpoint_ids: Collection[uuid.UUID]) -> bool:
    """Holds what the endpoints a turn disabled had waiting, then clears their mark. False when
    it could not hold all of it (rows another transaction holds, a concurrent change): to be tried
    again (the mark stays: the sweep does it if nobody else does). Waits on no lock."""
    ids = list(endpoint_ids)
    try:
        async with conn.transaction(isolation="repeatable_read"):
            held = await conn.fetchrow(HOLD.text, *HOLD.args({"endpoint_ids": ids}))
    except asyncpg.SerializationError:
        return False
    assert held is not None  # one row always
    if held["complete"]:
        await conn.execute(HELD.text, *HELD.args({"endpoint_ids": ids, "held_at": held["at"]}))
    return bool(held["complete"])


async def hold_stranded(db: Database, *, stale_after: float) -> int:
    """The sweep's part: holds what endpoints disabled at least `stale_after` seconds ago still
    have waiting because their hold was lost (or has not succeeded yet). Returns how many endpoints
    it held, 0 when it could not hold all of it (the marks stay: the next tick tries again)."""
    async with driver_connection(db.autocommit) as conn:
        rows = await conn.fetch(STRANDED.text, *STRANDED.args({"stale_after": stale_after}))
        stranded = [r["id"] for r in rows]
        if stranded and await hold(conn, stranded):
            return len(stranded)
    return 0


async def sender_needed(db: Database, *, stale_after: float) -> bool:
    async with driver_connection(db.autocommit) as conn:
        return bool(await conn.fetchval(NEEDED.text, *NEEDED.args({"stale_after": stale_after})))
