"""Engine preview -> GraphQL: every candidate of every level, with its decision."""

from __future__ import annotations

from app.engine.plan import Pick, Skip
from app.engine.preview import Preview
from app.models.leads import LeadStatus
from app.schema.types import (
    DistributionPreview,
    PreviewCandidate,
    PreviewDecision,
    PreviewLevel,
)


def to_preview(preview: Preview) -> DistributionPreview:
    plan, state = preview.plan, preview.state
    decided: dict[tuple[object, object], Pick | Skip] = {
        (step.level.id, step.candidate.subscription_id): step for step in plan.steps
    }
    visited = {level.id for level in plan.visited}
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
                PreviewCandidate(
                    provider_id=candidate.provider_id,
                    subscription_id=candidate.subscription_id,
                    decision=decision,
                    reason=reason,
                    detail=detail,
                )
            )
        levels.append(
            PreviewLevel(
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
        lead_status=LeadStatus(preview.lead_status),
        distributable=preview.distributable,
        start_level_id=plan.start_level.id if plan.start_level else None,
        levels=levels,
        outcome=plan.outcome,
    )
