"""The domain's enums, exposed as GraphQL enums under the same names."""

import strawberry

from app.engine.plan import SkipReason
from app.models.audit import ActorType
from app.models.billing import LedgerKind, ProviderStatus, SubscriptionStatus
from app.models.distribution import NotificationStatus, RunStatus
from app.models.leads import LeadStatus
from app.models.niches import LevelStrategy

for enum in (
    SkipReason,
    ActorType,
    LedgerKind,
    ProviderStatus,
    SubscriptionStatus,
    NotificationStatus,
    RunStatus,
    LeadStatus,
    LevelStrategy,
):
    strawberry.enum(enum)

__all__ = [
    "ActorType",
    "LeadStatus",
    "LedgerKind",
    "LevelStrategy",
    "NotificationStatus",
    "ProviderStatus",
    "RunStatus",
    "SkipReason",
    "SubscriptionStatus",
]
