from __future__ import annotations

import uuid

import qrcode
import qrcode.image.svg
import strawberry
from strawberry.permission import BasePermission

from app.resolvers.context import Info
from app.resolvers.permissions import IsAdmin
from app.schema.accounts import AccessToken, Enrollment, ProviderUser
from app.services import provider_users

ADMIN: list[type[BasePermission]] = [IsAdmin]


def qr_svg(uri: str) -> str:
    """qrcode without Pillow: its SVG path image, as the CLI shows its ASCII form."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage)
    return str(image.to_string(encoding="unicode"))


@strawberry.type
class ProviderUserMutations:
    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Invites a provider user by email: a single-use link that expires (INVITE_TTL_HOURS), "
        "sent through the notification outbox (template provider_invite). Again for a user who has not "
        "finished enrolling: a new link, the earlier ones stop.",
    )
    async def invite_provider_user(self, info: Info, provider_id: uuid.UUID, email: str) -> ProviderUser:
        c = info.context
        invited = await provider_users.invite(
            c.db,
            actor=await c.actor(),
            provider_id=provider_id,
            email=email,
            settings=c.settings,
            dispatcher=c.dispatcher,
        )
        return ProviderUser.of(invited.user)

    @strawberry.mutation(
        description="The invite's token and a password (12+ characters): starts the TOTP enrollment. "
        "Single use; the account signs in only after confirmEnrollment."
    )
    async def accept_invite(self, info: Info, token: str, password: str) -> Enrollment:
        c = info.context
        enrollment = await provider_users.accept_invite(
            c.db, c.redis, token=token, password=password, client=c.client, settings=c.settings
        )
        return Enrollment(
            enrollment_token=enrollment.token,
            provisioning_uri=enrollment.provisioning_uri,
            qr_svg=qr_svg(enrollment.provisioning_uri),
            expires_at=enrollment.expires_at,
        )

    @strawberry.mutation(
        description="The first code from the authenticator: enrollment is complete and the first "
        "sign-in too (an access token)."
    )
    async def confirm_enrollment(self, info: Info, token: str, code: str) -> AccessToken:
        c = info.context
        issued = await provider_users.confirm_enrollment(
            c.db, c.redis, token=token, code=code, client=c.client, settings=c.settings
        )
        return AccessToken(token=issued.token, expires_at=issued.expires_at)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Its access tokens are revoked and the API keys it made stop, in every API process "
        "at once (open WebSockets signed in with them close).",
    )
    async def disable_provider_user(self, info: Info, id: uuid.UUID) -> ProviderUser:
        changed = await provider_users.set_disabled(
            info.context.db, actor=await info.context.actor(), user_id=id, disabled=True
        )
        await info.context.revoked(*changed.revoked_hashes)
        return ProviderUser.of(changed.user)

    @strawberry.mutation(
        permission_classes=ADMIN, description="It signs in again (its old access tokens stay revoked)."
    )
    async def enable_provider_user(self, info: Info, id: uuid.UUID) -> ProviderUser:
        changed = await provider_users.set_disabled(
            info.context.db, actor=await info.context.actor(), user_id=id, disabled=False
        )
        return ProviderUser.of(changed.user)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Deletes the user; its access tokens and the API keys it made are revoked.",
    )
    async def remove_provider_user(self, info: Info, id: uuid.UUID) -> ProviderUser:
        changed = await provider_users.remove(info.context.db, actor=await info.context.actor(), user_id=id)
        await info.context.revoked(*changed.revoked_hashes)
        return ProviderUser.of(changed.user)
