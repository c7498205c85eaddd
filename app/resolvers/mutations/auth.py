from __future__ import annotations

import uuid

import strawberry

from app.resolvers.context import Info
from app.resolvers.permissions import IsAdminUser, IsAuthenticated
from app.schema.accounts import AccessToken, ApiKey, CreatedApiKey, MfaChallenge
from app.services import auth


@strawberry.type
class AuthMutations:
    @strawberry.mutation(description="Password step: returns a short-lived MFA challenge for verifyMfa.")
    async def login(self, info: Info, email: str, password: str) -> MfaChallenge:
        c = info.context
        issued = await auth.login(
            c.db, c.redis, email=email, password=password, client=c.client, settings=c.settings
        )
        return MfaChallenge(challenge=issued.token, expires_at=issued.expires_at)

    @strawberry.mutation(description="TOTP step: a 6-digit code (±30 s, each code once) -> access token.")
    async def verify_mfa(self, info: Info, challenge: str, code: str) -> AccessToken:
        c = info.context
        issued = await auth.verify_mfa(
            c.db, c.redis, challenge=challenge, code=code, client=c.client, settings=c.settings
        )
        return AccessToken(token=issued.token, expires_at=issued.expires_at)

    @strawberry.mutation(permission_classes=[IsAuthenticated], description="Revokes this access token.")
    async def logout(self, info: Info) -> bool:
        actor = await info.context.actor()
        token = info.context.credential or ""
        revoked = await auth.logout(info.context.db, actor=actor, token=token)
        await info.context.revoked(auth.digest(token))
        return revoked

    @strawberry.mutation(
        permission_classes=[IsAdminUser],
        description="An operator's key (operator scopes), or with providerId a provider's key (scopes "
        "provider:read, provider:write). A provider user makes keys for its own provider only.",
    )
    async def create_api_key(
        self, info: Info, name: str, scopes: list[str], provider_id: uuid.UUID | None = None
    ) -> CreatedApiKey:
        created = await auth.create_api_key(
            info.context.db,
            actor=await info.context.actor(),
            name=name,
            scopes=scopes,
            provider_id=provider_id,
        )
        return CreatedApiKey(api_key=ApiKey.of(created.key), secret=created.secret)

    @strawberry.mutation(
        permission_classes=[IsAdminUser], description="A provider user revokes its provider's keys only."
    )
    async def revoke_api_key(self, info: Info, id: uuid.UUID) -> ApiKey:
        key = await auth.revoke_api_key(info.context.db, actor=await info.context.actor(), key_id=id)
        await info.context.revoked(key.key_hash)
        return ApiKey.of(key)
