"""The preview service's result -> GraphQL types."""

from __future__ import annotations

from app.models.leads import LeadStatus
from app.schema.controls import Cap
from app.schema.types import DistributionPreview, PreviewCandidate, PreviewLevel
from app.services import preview as service


def to_preview(preview: service.DistributionPreview) -> DistributionPreview:
    return DistributionPreview(
        lead_id=preview.lead_id,
        lead_status=LeadStatus(preview.lead_status),
        distributable=preview.distributable,
        start_level_id=preview.start_level_id,
        levels=[
            PreviewLevel(
                level_id=level.level_id,
                name=level.name,
                order_position=level.order_position,
                price_cents=level.price_cents,
                max_recipients=level.max_recipients,
                visited=level.visited,
                candidates=[
                    PreviewCandidate(
                        provider_id=c.provider_id,
                        subscription_id=c.subscription_id,
                        decision=c.decision,
                        reason=c.reason,
                        detail=c.detail,
                        caps=[Cap.of(cap) for cap in c.caps],
                    )
                    for c in level.candidates
                ],
            )
            for level in preview.levels
        ],
        outcome=preview.outcome,
    )
