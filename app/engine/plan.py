"""The decision of SPEC §2 as a pure function of a snapshot: rotation, traversal, fairness walk with
backfill, skip reasons and outcome. The engine runs it on locked rows; preview on a plain read.
Being pure is what makes the engine deterministic and lets tests check it against a model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from app.engine.eligibility import Condition, Verdict, evaluate
from app.engine.schedule import Schedule
from app.engine.usage import USAGE_ORDER, used
from app.models.billing import ProviderStatus, SubscriptionStatus
from app.models.distribution import RunStatus, SkipReason
from app.models.niches import LevelStrategy

UTC_ZONE = ZoneInfo("UTC")

# skips that make an otherwise successful run PARTIAL (SPEC §2.6); the buyer's own limits
# (CAP_REACHED, OUTSIDE_SCHEDULE) never do (SPEC §8)
PARTIAL_REASONS = frozenset({SkipReason.INSUFFICIENT_BALANCE, SkipReason.ELIGIBILITY_ERROR})


@dataclass(frozen=True, slots=True)
class Level:
    id: uuid.UUID
    name: str
    order_position: int
    price_cents: int
    max_recipients: int


@dataclass(frozen=True, slots=True)
class CapState:
    """A cap that applies to a candidate, with what its current period has used so far."""

    provider_wide: bool  # else the subscription's own
    period: str  # CapPeriod
    max_leads: int | None
    max_spend_cents: int | None
    used_leads: int
    used_spend_cents: int

    def broken_by(self, price_cents: int) -> str | None:
        """What one more lead at this price would break, or None if it fits."""
        scope = "provider" if self.provider_wide else "subscription"
        if self.max_leads is not None and self.used_leads + 1 > self.max_leads:
            return f"{scope} {self.period} cap: {self.used_leads}/{self.max_leads} leads"
        if self.max_spend_cents is not None and self.used_spend_cents + price_cents > self.max_spend_cents:
            return (
                f"{scope} {self.period} cap: {self.used_spend_cents}/{self.max_spend_cents} cents spent, "
                f"price {price_cents}"
            )
        return None


@dataclass(slots=True)
class Candidate:
    """One subscription of a level, with its provider's state as read (or as locked)."""

    subscription_id: uuid.UUID
    provider_id: uuid.UUID
    subscription_status: str
    provider_status: str
    balance_cents: int
    filters: Sequence[Condition]
    schedule: Schedule | None = None  # None: always open
    zone: ZoneInfo | None = None  # the provider's time zone (None: UTC)
    # caps as the read returned them (JSON of the subscription's and the provider's, and the usage
    # counters' current values as text; None: no caps), parsed only for the candidates a walk
    # reaches, which is a few of the window read
    caps_json: str | None = None
    provider_caps_json: str | None = None
    usage: str | None = None
    revision: int = 0  # the provider row's revision when read
    _caps: tuple[CapState, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def caps(self) -> tuple[CapState, ...]:
        """Provider-wide caps first, each scope in period order."""
        if self._caps is None:
            self._caps = () if self.usage is None else _cap_states(self)
        return self._caps


def _cap_states(candidate: Candidate) -> tuple[CapState, ...]:
    numbers = [int(n) for n in (candidate.usage or "").split(",")]
    states = []
    for provider_wide, text in ((True, candidate.provider_caps_json), (False, candidate.caps_json)):
        if text is None:
            continue
        limits = orjson.loads(text)
        for period in USAGE_ORDER:
            limit = limits.get(period)
            if limit is not None:
                leads, spend = used(numbers, period, provider_wide=provider_wide)
                states.append(
                    CapState(provider_wide, period, limit.get("leads"), limit.get("spend"), leads, spend)
                )
    return tuple(states)


@dataclass(frozen=True)
class NicheState:
    niche_id: uuid.UUID
    niche_name: str
    strategy: LevelStrategy
    next_start_position: int
    levels: Sequence[Level]  # active, not deleted, ascending order_position
    candidates: Mapping[uuid.UUID, list[Candidate]]  # per level, least recently served first
    assigned_providers: frozenset[uuid.UUID] = frozenset()  # already hold this lead
    # levels whose candidate list is only a window of the first ones in LRU order
    partial_levels: frozenset[uuid.UUID] = frozenset()
    # the instant the plan is for: delivery windows are evaluated at it
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Pick:
    level: Level
    candidate: Candidate


@dataclass(frozen=True, slots=True)
class Skip:
    level: Level
    candidate: Candidate
    reason: SkipReason
    detail: str = ""


@dataclass(frozen=True)
class Plan:
    start_level: Level | None
    next_start_position: int | None  # None: no active level, the rotation stays
    visited: list[Level] = field(default_factory=list)
    steps: list[Pick | Skip] = field(default_factory=list)  # walk order, for progress events
    # partial levels the walk ran off without filling: read them in full and plan again
    needs_full_levels: set[uuid.UUID] = field(default_factory=set)

    @property
    def picks(self) -> list[Pick]:
        return [s for s in self.steps if isinstance(s, Pick)]

    @property
    def skips(self) -> list[Skip]:
        return [s for s in self.steps if isinstance(s, Skip)]

    @property
    def outcome(self) -> RunStatus:
        if not self.picks:
            return RunStatus.NO_ELIGIBLE
        if any(s.reason in PARTIAL_REASONS for s in self.skips):
            return RunStatus.PARTIAL
        return RunStatus.SUCCESS

    @property
    def picked_provider_ids(self) -> list[uuid.UUID]:
        return [p.candidate.provider_id for p in self.picks]


def starting_index(levels: Sequence[Level], next_start_position: int) -> int | None:
    """The active level with the smallest order_position >= the niche's value, wrapping round to
    the lowest. Only active levels are passed in, so inactive or deleted ones never take a turn."""
    if not levels:
        return None
    for index, level in enumerate(levels):
        if level.order_position >= next_start_position:
            return index
    return 0


def circular(levels: Sequence[Level], start: int) -> Iterator[Level]:
    for offset in range(len(levels)):
        yield levels[(start + offset) % len(levels)]


def plan_distribution(state: NicheState, attributes: Mapping[str, Any]) -> Plan:
    start = starting_index(state.levels, state.next_start_position)
    if start is None:
        return Plan(start_level=None, next_start_position=None)
    plan = Plan(
        start_level=state.levels[start],
        next_start_position=state.levels[(start + 1) % len(state.levels)].order_position,
    )
    holders = set(state.assigned_providers)
    at = state.at
    for level in circular(state.levels, start):
        plan.visited.append(level)
        taken = 0
        for candidate in state.candidates.get(level.id, ()):
            if taken == level.max_recipients:
                break
            skip = _skip_reason(level, candidate, holders, attributes, at)
            if skip is not None:
                plan.steps.append(skip)
                continue
            plan.steps.append(Pick(level, candidate))
            holders.add(candidate.provider_id)
            taken += 1
        if taken < level.max_recipients and level.id in state.partial_levels:
            plan.needs_full_levels.add(level.id)
        if taken and state.strategy is LevelStrategy.FIRST_MATCH:
            break
    return plan


def _skip_reason(
    level: Level,
    candidate: Candidate,
    holders: set[uuid.UUID],
    attributes: Mapping[str, Any],
    at: datetime | None,
) -> Skip | None:
    if candidate.provider_id in holders:
        return Skip(level, candidate, SkipReason.ALREADY_ASSIGNED)
    if candidate.provider_status != ProviderStatus.ACTIVE:
        return Skip(level, candidate, SkipReason.PROVIDER_SUSPENDED)
    if candidate.subscription_status == SubscriptionStatus.PAUSED:
        return Skip(level, candidate, SkipReason.SUBSCRIPTION_PAUSED)
    if candidate.schedule is not None:
        if at is None:
            raise ValueError("a plan with delivery schedules needs the instant it is for (NicheState.at)")
        zone = candidate.zone or UTC_ZONE
        if not candidate.schedule.is_open(zone, at):
            return Skip(
                level,
                candidate,
                SkipReason.OUTSIDE_SCHEDULE,
                f"closed at {at.astimezone(zone):%a %H:%M} {zone}",
            )
    evaluation = evaluate(candidate.filters, attributes)
    if evaluation.verdict is Verdict.INELIGIBLE:
        return Skip(level, candidate, SkipReason.INELIGIBLE, evaluation.detail)
    if evaluation.verdict is Verdict.ERROR:
        return Skip(level, candidate, SkipReason.ELIGIBILITY_ERROR, evaluation.detail)
    for cap in candidate.caps:
        broken = cap.broken_by(level.price_cents)
        if broken is not None:
            return Skip(level, candidate, SkipReason.CAP_REACHED, broken)
    # The balance decides, not the derived INSUFFICIENT_FUNDS flag: both agree at every commit,
    # and the balance is what the engine re-reads under the provider's row lock.
    if candidate.balance_cents < level.price_cents:
        return Skip(
            level,
            candidate,
            SkipReason.INSUFFICIENT_BALANCE,
            f"balance {candidate.balance_cents} < price {level.price_cents}",
        )
    return None
