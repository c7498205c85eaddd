"""The decision of SPEC §2 as a pure function of a snapshot: rotation, traversal, fairness walk with
backfill, skip reasons and outcome. The engine runs it on locked rows; preview on a plain read.
Being pure is what makes the engine deterministic and lets tests check it against a model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.engine.eligibility import Condition, Verdict, evaluate
from app.models.billing import ProviderStatus, SubscriptionStatus
from app.models.distribution import RunStatus, SkipReason
from app.models.niches import LevelStrategy

# skips that make an otherwise successful run PARTIAL (SPEC §2.6)
PARTIAL_REASONS = frozenset({SkipReason.INSUFFICIENT_BALANCE, SkipReason.ELIGIBILITY_ERROR})


@dataclass(frozen=True, slots=True)
class Level:
    id: uuid.UUID
    name: str
    order_position: int
    price_cents: int
    max_recipients: int


@dataclass(slots=True)
class Candidate:
    """One subscription of a level, with its provider's state as read (or as locked)."""

    subscription_id: uuid.UUID
    provider_id: uuid.UUID
    subscription_status: str
    provider_status: str
    balance_cents: int
    filters: Sequence[Condition]


@dataclass(frozen=True)
class NicheState:
    niche_id: uuid.UUID
    niche_name: str
    strategy: LevelStrategy
    next_start_position: int
    levels: Sequence[Level]  # active, not deleted, ascending order_position
    candidates: Mapping[uuid.UUID, Sequence[Candidate]]  # per level, least recently served first
    assigned_providers: frozenset[uuid.UUID] = frozenset()  # already hold this lead
    # levels whose candidate list is only a window of the first ones in LRU order
    partial_levels: frozenset[uuid.UUID] = frozenset()


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
    for level in circular(state.levels, start):
        plan.visited.append(level)
        taken = 0
        for candidate in state.candidates.get(level.id, ()):
            if taken == level.max_recipients:
                break
            skip = _skip_reason(level, candidate, holders, attributes)
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
    level: Level, candidate: Candidate, holders: set[uuid.UUID], attributes: Mapping[str, Any]
) -> Skip | None:
    if candidate.provider_id in holders:
        return Skip(level, candidate, SkipReason.ALREADY_ASSIGNED)
    if candidate.provider_status != ProviderStatus.ACTIVE:
        return Skip(level, candidate, SkipReason.PROVIDER_SUSPENDED)
    if candidate.subscription_status == SubscriptionStatus.PAUSED:
        return Skip(level, candidate, SkipReason.SUBSCRIPTION_PAUSED)
    evaluation = evaluate(candidate.filters, attributes)
    if evaluation.verdict is Verdict.INELIGIBLE:
        return Skip(level, candidate, SkipReason.INELIGIBLE, evaluation.detail)
    if evaluation.verdict is Verdict.ERROR:
        return Skip(level, candidate, SkipReason.ELIGIBILITY_ERROR, evaluation.detail)
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
