"""Every operation names what it needs; these raise the domain errors the error mapping turns into
UNAUTHENTICATED / MFA_REQUIRED / FORBIDDEN. Admin users (after MFA) hold every operator scope;
provider principals hold `provider:read` / `provider:write` only, so every operator operation
refuses them here, and the services refuse them again (app/services/principals.py). Operations
open to providers (`CanReadOwn`, `CanWriteOwn`) leave the ownership check to the service."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from app.errors import Forbidden
from app.models.audit import ActorType
from app.resolvers.context import Info
from app.services.audit import Actor


class _Scoped(BasePermission):
    scope = ""
    provider_scope = ""  # set: a provider principal with this scope may call it (on its own data)

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        actor = await info.context.actor()
        if self.scope in actor.scopes or (self.provider_scope and self.provider_scope in actor.scopes):
            return True
        if actor.provider_id is not None and not self.provider_scope:
            raise Forbidden("this operation is for operators; a provider's credentials cannot do it")
        wanted = " or ".join(repr(s) for s in (self.scope, self.provider_scope) if s)
        raise Forbidden(
            f"this operation needs the {wanted} scope; this credential has {sorted(actor.scopes)}"
        )


class CanRead(_Scoped):
    scope = "read"


class CanWriteLeads(_Scoped):
    scope = "leads:write"


class CanDistribute(_Scoped):
    scope = "distribution:write"


class IsAdmin(_Scoped):
    scope = "admin"


class CanReadOwn(_Scoped):
    """Operators with `read`; provider principals with `provider:read`, on their own data."""

    scope = "read"
    provider_scope = "provider:read"


class CanReadOwnDetails(_Scoped):
    """Reads that carry leads' contact details (webhook bodies): operators with `admin`; provider
    principals with `provider:read`, on their own data (they bought those leads)."""

    scope = "admin"
    provider_scope = "provider:read"


class CanWriteOwn(_Scoped):
    """Operators with `admin`; provider principals with `provider:write`, on their own data."""

    scope = "admin"
    provider_scope = "provider:write"


class IsAuthenticated(BasePermission):
    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        await info.context.actor()
        return True


class IsAdminUser(BasePermission):
    """A person (not an API key): managing API keys. A provider user manages its provider's keys
    (the service sees to it)."""

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        actor = await info.context.actor()
        if actor.type is not ActorType.USER:
            raise Forbidden("only a signed-in user may manage API keys")
        return True


def sees_contact_details(actor: Actor) -> bool:
    """An operator with `admin` sees every lead's contact details; a provider principal those of
    the leads assigned to it (Lead.attributes checks that); anyone else none."""
    return "admin" in actor.scopes and actor.provider_id is None
