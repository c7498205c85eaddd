"""Every table, imported in dependency order so SQLModel.metadata is complete for Alembic."""

from app.models import base  # noqa: F401  (naming convention first)
from app.models.audit import ActorType, AuditAction, AuditEntry
from app.models.auth import AccessToken, AdminUser, ApiKey, MfaChallenge, ProviderInvite, ProviderUser
from app.models.billing import (
    LedgerEntry,
    LedgerKind,
    Provider,
    ProviderStatus,
    Subscription,
    SubscriptionStatus,
)
from app.models.caps import CapPeriod
from app.models.distribution import (
    DistributionBatch,
    DistributionRun,
    Notification,
    NotificationStatus,
    RunStatus,
)
from app.models.leads import Assignment, Lead, LeadStatus
from app.models.niches import CompetitionLevel, LevelStrategy, Niche
from app.models.returns import Return, ReturnReason, ReturnStatus
from app.models.webhooks import WebhookDelivery, WebhookEndpoint

__all__ = [
    "AccessToken",
    "ActorType",
    "AdminUser",
    "ApiKey",
    "Assignment",
    "AuditAction",
    "AuditEntry",
    "CapPeriod",
    "CompetitionLevel",
    "DistributionBatch",
    "DistributionRun",
    "Lead",
    "LeadStatus",
    "LedgerEntry",
    "LedgerKind",
    "LevelStrategy",
    "MfaChallenge",
    "Niche",
    "Notification",
    "NotificationStatus",
    "Provider",
    "ProviderInvite",
    "ProviderStatus",
    "Return",
    "ReturnReason",
    "ReturnStatus",
    "ProviderUser",
    "RunStatus",
    "Subscription",
    "SubscriptionStatus",
    "WebhookDelivery",
    "WebhookEndpoint",
]
