"""Who signs in: sign-in steps, API keys, provider users and their enrollment, and `me`."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import strawberry

from app.models import auth as auth_models
from app.models.audit import ActorType
from app.resolvers.context import Info
from app.resolvers.direct import direct_field
from app.resolvers.loaders import load_now
from app.schema.types import Provider, from_row


@strawberry.type
class MfaChallenge:
    challenge: str
    expires_at: datetime


@strawberry.type
class AccessToken:
    token: str
    expires_at: datetime


@strawberry.type
class ApiKey:
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    provider_id: uuid.UUID | None = strawberry.field(
        description="Set for a provider's key: it reaches only that provider's data."
    )
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, m: auth_models.ApiKey) -> ApiKey:
        return from_row(cls, m, scopes=list(m.scopes))


@strawberry.type
class CreatedApiKey:
    api_key: ApiKey
    secret: str = strawberry.field(description="Shown once: store it now; only its hash is kept.")


@strawberry.type
class Me:
    actor_type: ActorType
    id: uuid.UUID | None
    label: str
    scopes: list[str]
    provider_id: uuid.UUID | None = strawberry.field(
        description="Set for a provider principal (a provider user or a provider's API key)."
    )

    @direct_field
    def provider(self, info: Info) -> Provider | None:
        if self.provider_id is None:
            return None
        return load_now(info.context.loaders.provider, self.provider_id, Provider.maybe)


@strawberry.enum
class ProviderUserStatus(StrEnum):
    INVITED = "INVITED"  # no first TOTP code confirmed yet: cannot sign in
    ACTIVE = "ACTIVE"
    DISABLED = "DISABLED"


@strawberry.type(description="A person who signs in for a provider (a buyer's user).")
class ProviderUser:
    id: uuid.UUID
    provider_id: uuid.UUID
    email: str
    status: ProviderUserStatus
    enrolled_at: datetime | None
    disabled_at: datetime | None
    locked_until: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, m: auth_models.ProviderUser) -> ProviderUser:
        status = (
            ProviderUserStatus.DISABLED
            if m.disabled_at is not None
            else ProviderUserStatus.ACTIVE
            if m.enrolled_at is not None
            else ProviderUserStatus.INVITED
        )
        return from_row(cls, m, status=status)

    @direct_field
    def provider(self, info: Info) -> Provider | None:
        return load_now(info.context.loaders.provider, self.provider_id, Provider.maybe)


@strawberry.type(
    description="acceptInvite's answer: add the secret to an authenticator app (scan qrSvg, or "
    "enter provisioningUri), then send its first code to confirmEnrollment with enrollmentToken."
)
class Enrollment:
    enrollment_token: str = strawberry.field(description="Single use, short-lived: for confirmEnrollment.")
    provisioning_uri: str
    qr_svg: str = strawberry.field(description="The provisioning URI as an SVG QR code.")
    expires_at: datetime
