"""Analytics (SPEC §5, §8): runs by outcome (in all and per hour), success rate, revenue, returns
and fairness per level, and the CSV export of assignments. Set-based SQL; the export streams in
keyset chunks, never all in memory. Both span every provider: operators only."""

from __future__ import annotations

import csv
import io
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app.db import Database
from app.errors import InvalidInput
from app.models.returns import ReturnStatus
from app.services.audit import Actor
from app.services.principals import require_operator

TERMINAL = ("SUCCESS", "PARTIAL", "NO_ELIGIBLE", "FAILED")
# the hourly series is at most this long: 744 hours × 6 statuses per niche at worst
HOURLY_SPAN_MAX = timedelta(days=31)


@dataclass(frozen=True)
class HourlyCount:
    hour: datetime  # the start of a UTC hour
    status: str
    count: int


@dataclass
class LevelFairness:
    level_id: uuid.UUID
    level_name: str
    received: dict[uuid.UUID, int] = field(default_factory=dict)  # per subscribed provider

    @property
    def spread(self) -> int:
        counts = list(self.received.values())
        return max(counts) - min(counts) if counts else 0


@dataclass
class NicheStats:
    niche_id: uuid.UUID
    niche_name: str
    runs_by_outcome: dict[str, int] = field(default_factory=dict)
    runs_by_hour: list[HourlyCount] = field(default_factory=list)  # only when asked for
    revenue_cents: int = 0
    assignments: int = 0
    levels: list[LevelFairness] = field(default_factory=list)
    # returns of the range's assignments (whenever asked or decided): a ratio of one cohort
    returns_requested: int = 0
    returns_approved: int = 0
    refunded_cents: int = 0

    @property
    def success_rate(self) -> float | None:
        finished = sum(self.runs_by_outcome.get(s, 0) for s in TERMINAL)
        won = self.runs_by_outcome.get("SUCCESS", 0) + self.runs_by_outcome.get("PARTIAL", 0)
        return round(won / finished, 4) if finished else None

    @property
    def return_rate(self) -> float | None:
        return round(self.returns_approved / self.assignments, 4) if self.assignments else None


def _check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise InvalidInput("from must be before to", field="from")


def _hourly_range(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """The hourly series needs a start and spans at most HOURLY_SPAN_MAX (to: now by default), so
    its size stays bounded whatever the history holds."""
    if since is None:
        raise InvalidInput("runsByHour needs `from` (and at most 31 days up to `to`)", field="from")
    until = until or datetime.now(UTC)
    if until - since > HOURLY_SPAN_MAX:
        raise InvalidInput(
            f"runsByHour covers at most 31 days; from {since.isoformat()} to {until.isoformat()} is longer",
            field="from",
        )
    return since, until


async def distribution_stats(
    db: Database,
    *,
    actor: Actor,
    niche_id: uuid.UUID | None,
    since: datetime | None,
    until: datetime | None,
    hourly: bool = False,
) -> list[NicheStats]:
    """hourly: also the runs per UTC hour and status (runs_by_hour), which needs a bounded range."""
    require_operator(actor, "reading distribution statistics (they name every provider)")
    _check_range(since, until)
    hourly_range = _hourly_range(since, until) if hourly else None
    params = {"niche": niche_id, "since": since, "until": until}
    window = """(CAST(:since AS timestamptz) IS NULL OR {col} >= :since)
                AND (CAST(:until AS timestamptz) IS NULL OR {col} < :until)"""
    niche_filter = "(CAST(:niche AS uuid) IS NULL OR n.id = :niche)"
    async with db.read() as session:
        niches = (
            await session.execute(
                sa.text(f"SELECT n.id, n.name FROM niches n WHERE {niche_filter} ORDER BY n.name"), params
            )
        ).all()
        stats = {row.id: NicheStats(row.id, row.name) for row in niches}
        runs = await session.execute(
            sa.text(f"""
            SELECT l.niche_id, r.status, count(*) AS n FROM distribution_runs r
            JOIN leads l ON l.id = r.lead_id JOIN niches n ON n.id = l.niche_id
            WHERE {niche_filter} AND {window.format(col="r.created_at")}
            GROUP BY 1, 2"""),
            params,
        )
        for row in runs:
            stats[row.niche_id].runs_by_outcome[row.status] = row.n
        if hourly_range is not None:
            # by created_at, as runs_by_outcome: per niche, the hours add up to its totals
            hours = await session.execute(
                sa.text(f"""
                SELECT l.niche_id, date_trunc('hour', r.created_at, 'UTC') AS hour, r.status, count(*) AS n
                FROM distribution_runs r
                JOIN leads l ON l.id = r.lead_id JOIN niches n ON n.id = l.niche_id
                WHERE {niche_filter} AND r.created_at >= :hourly_since AND r.created_at < :hourly_until
                GROUP BY 1, 2, 3 ORDER BY 2, 3"""),
                params | {"hourly_since": hourly_range[0], "hourly_until": hourly_range[1]},
            )
            for row in hours:
                stats[row.niche_id].runs_by_hour.append(HourlyCount(row.hour, row.status, row.n))
        money = await session.execute(
            sa.text(f"""
            SELECT lv.niche_id, sum(a.price_charged_cents) AS revenue, count(*) AS n FROM assignments a
            JOIN competition_levels lv ON lv.id = a.competition_level_id JOIN niches n ON n.id = lv.niche_id
            WHERE {niche_filter} AND {window.format(col="a.created_at")}
            GROUP BY 1"""),
            params,
        )
        for row in money:
            stats[row.niche_id].revenue_cents, stats[row.niche_id].assignments = int(row.revenue), row.n
        returned = await session.execute(
            sa.text(f"""
            SELECT lv.niche_id, count(*) AS requested,
                   count(*) FILTER (WHERE r.status = :approved) AS approved,
                   coalesce(sum(e.amount_cents), 0) AS refunded
            FROM returns r JOIN assignments a ON a.id = r.assignment_id
            JOIN competition_levels lv ON lv.id = a.competition_level_id JOIN niches n ON n.id = lv.niche_id
            LEFT JOIN ledger_entries e ON e.id = r.refund_entry_id
            WHERE {niche_filter} AND {window.format(col="a.created_at")}
            GROUP BY 1"""),
            params | {"approved": ReturnStatus.APPROVED.value},
        )
        for row in returned:
            niche_stats = stats[row.niche_id]
            niche_stats.returns_requested, niche_stats.returns_approved = row.requested, row.approved
            niche_stats.refunded_cents = int(row.refunded)
        received = await session.execute(
            sa.text(f"""
            SELECT lv.niche_id, lv.id AS level_id, lv.name AS level_name, s.provider_id,
                   count(a.id) FILTER (WHERE {window.format(col="a.created_at")}) AS n
            FROM competition_levels lv JOIN niches n ON n.id = lv.niche_id
            JOIN subscriptions s ON s.competition_level_id = lv.id
            LEFT JOIN assignments a ON a.subscription_id = s.id
            WHERE {niche_filter} AND lv.deleted_at IS NULL
            GROUP BY 1, 2, 3, 4, lv.order_position ORDER BY lv.order_position"""),
            params,
        )
        levels: dict[uuid.UUID, LevelFairness] = {}
        by_niche: dict[uuid.UUID, list[LevelFairness]] = defaultdict(list)
        for row in received:
            if row.level_id not in levels:
                levels[row.level_id] = LevelFairness(row.level_id, row.level_name)
                by_niche[row.niche_id].append(levels[row.level_id])
            levels[row.level_id].received[row.provider_id] = row.n
    for niche, found in by_niche.items():
        stats[niche].levels = found
    return list(stats.values())


EXPORT_COLUMNS = [
    "assignment_id",
    "created_at",
    "lead_id",
    "niche",
    "level",
    "provider_id",
    "provider",
    "price_charged_cents",
]


def assignments_csv(
    db: Database,
    *,
    actor: Actor,
    since: datetime | None,
    until: datetime | None,
    niche_id: uuid.UUID | None = None,
    chunk: int = 1000,
) -> AsyncIterator[str]:
    """Lines of CSV (header first), oldest first, read in keyset chunks. The principal and the
    range are checked here, when called, not when the first line is read."""
    require_operator(actor, "exporting assignments (every provider's)")
    _check_range(since, until)
    return _csv_chunks(db, since=since, until=until, niche_id=niche_id, chunk=chunk)


async def _csv_chunks(
    db: Database, *, since: datetime | None, until: datetime | None, niche_id: uuid.UUID | None, chunk: int
) -> AsyncIterator[str]:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    yield out.getvalue()
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        async with db.read() as session:
            rows = (
                await session.execute(
                    sa.text("""
                SELECT a.id, a.created_at, a.lead_id, n.name AS niche, lv.name AS level, a.provider_id,
                       p.name AS provider, a.price_charged_cents
                FROM assignments a
                JOIN competition_levels lv ON lv.id = a.competition_level_id
                JOIN niches n ON n.id = lv.niche_id JOIN providers p ON p.id = a.provider_id
                WHERE (CAST(:niche AS uuid) IS NULL OR lv.niche_id = :niche)
                  AND (CAST(:since AS timestamptz) IS NULL OR a.created_at >= :since)
                  AND (CAST(:until AS timestamptz) IS NULL OR a.created_at < :until)
                  AND (CAST(:after_t AS timestamptz) IS NULL OR (a.created_at, a.id) > (:after_t, :after_id))
                ORDER BY a.created_at, a.id LIMIT :chunk"""),
                    {
                        "niche": niche_id,
                        "since": since,
                        "until": until,
                        "after_t": after[0] if after else None,
                        "after_id": after[1] if after else None,
                        "chunk": chunk,
                    },
                )
            ).all()
        if not rows:
            return
        out = io.StringIO()
        writer = csv.writer(out)
        for row in rows:
            writer.writerow(
                [
                    row.id,
                    row.created_at.isoformat(),
                    row.lead_id,
                    row.niche,
                    row.level,
                    row.provider_id,
                    row.provider,
                    row.price_charged_cents,
                ]
            )
        yield out.getvalue()
        after = (rows[-1].created_at, rows[-1].id)
