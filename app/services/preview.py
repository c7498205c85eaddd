"""previewDistribution: who would receive a lead now, and why the others would not. The engine's
own plan on a read-only snapshot (app/engine/preview.py), told as a decision per candidate."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.db import Database
from app.engine.plan import Pick, Skip
from app.engine.preview import preview_distribution as preview_plan
from app.models.distribution import PreviewDecision, RunStatus, SkipReason
from app.services.audit import Actor
from app.services.caps import CapUsage, caps_of_providers
from app.services.principals import require_operator


@dataclass(frozen=True)
class CandidatePreview:
    provider_id: uuid.UUID
    subscription_id: uuid.UUID
    decision: PreviewDecision
    reason: SkipReason | None
    detail: str | None
    caps: list[CapUsage]  # each cap that applies, with its current period's usage


@dataclass(frozen=True)
class LevelPreview:
    level_id: uuid.UUID
    name: str
    order_position: int
    price_cents: int
    max_recipients: int
    visited: bool
    candidates: list[CandidatePreview]


@dataclass(frozen=True)
class DistributionPreview:
    lead_id: uuid.UUID
    lead_status: str
    distributable: bool
    start_level_id: uuid.UUID | None
    levels: list[LevelPreview]
    outcome: RunStatus


async def preview_distribution(db: Database, *, actor: Actor, lead_id: uuid.UUID) -> DistributionPreview:
    require_operator(actor, "previewing distributions (they name every candidate)")
    preview = await preview_plan(db, lead_id=lead_id)
    plan, state = preview.plan, preview.state
    decided: dict[tuple[uuid.UUID, uuid.UUID], Pick | Skip] = {
        (step.level.id, step.candidate.subscription_id): step for step in plan.steps
    }
    visited = {level.id for level in plan.visited}
    # the caps as the caps service shows them everywhere (with each period's start); the decisions
    # above were made on the engine's own read of the same counters
    providers = sorted({c.provider_id for cs in state.candidates.values() for c in cs})
    caps = await caps_of_providers(db, providers) if providers else {}
    levels = []
    for level in state.levels:
        candidates = []
        for candidate in state.candidates.get(level.id, ()):
            step = decided.get((level.id, candidate.subscription_id))
            if isinstance(step, Pick):
                decision, reason, detail = PreviewDecision.WOULD_ASSIGN, None, None
            elif isinstance(step, Skip):
                decision, reason, detail = PreviewDecision.WOULD_SKIP, step.reason, step.detail
            else:
                decision, reason, detail = PreviewDecision.NOT_REACHED, None, None
            candidates.append(
                CandidatePreview(
                    candidate.provider_id,
                    candidate.subscription_id,
                    decision,
                    reason,
                    detail,
                    [
                        cap
                        for cap in caps[candidate.provider_id]
                        if cap.subscription_id in (None, candidate.subscription_id)
                    ],
                )
            )
        levels.append(
            LevelPreview(
                level_id=level.id,
                name=level.name,
                order_position=level.order_position,
                price_cents=level.price_cents,
                max_recipients=level.max_recipients,
                visited=level.id in visited,
                candidates=candidates,
            )
        )
    return DistributionPreview(
        lead_id=preview.lead_id,
        lead_status=preview.lead_status,
        distributable=preview.distributable,
        start_level_id=plan.start_level.id if plan.start_level else None,
        levels=levels,
        outcome=plan.outcome,
    )
