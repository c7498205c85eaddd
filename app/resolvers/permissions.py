"""Every operation names what it needs; these raise the domain errors the error mapping turns into
UNAUTHENTICATED / MFA_REQUIRED / FORBIDDEN. Admin users (after MFA) hold every scope."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from app.errors import Forbidden
from app.models.audit import ActorType
from app.resolvers.context import Info
from app.services.audit import Actor


class _Scoped(BasePermission):
    scope = ""

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        actor = await info.context.actor()
        if self.scope not in actor.scopes:
            raise Forbidden(
                f"this operation needs the {self.scope!r} scope; this credential has {sorted(actor.scopes)}"
            )
        return True


class CanRead(_Scoped):
    scope = "read"


class CanWriteLeads(_Scoped):
    scope = "leads:write"


class CanDistribute(_Scoped):
    scope = "distribution:write"


class IsAdmin(_Scoped):
    scope = "admin"


class IsAuthenticated(BasePermission):
    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        await info.context.actor()
        return True


class IsAdminUser(BasePermission):
    """A person (not an API key): managing API keys."""

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        actor = await info.context.actor()
        if actor.type is not ActorType.USER:
            raise Forbidden("only a signed-in admin user may manage API keys")
        return True


def sees_contact_details(actor: Actor) -> bool:
    return "admin" in actor.scopes
