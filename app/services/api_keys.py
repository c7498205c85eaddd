"""API keys for scripts: shown once, stored hashed, scoped, revocable. An operator's key holds
operator scopes; a provider's key is bound to one provider (`provider_id`) and holds only the
provider scopes. A provider user makes keys for its own provider only, and its keys stop while it
is disabled. Only people make keys (a key cannot make another)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col

from app.db import Database
from app.errors import Forbidden, InvalidInput, NotFound
from app.models.audit import ActorType, AuditAction
from app.models.auth import ApiKey
from app.models.base import utcnow
from app.models.billing import Provider
from app.services import _guards
from app.services.audit import Actor, record
from app.services.principals import own_provider_id
from app.services.tokens import KEY_PREFIX, PROVIDER_SCOPES, SCOPES, digest


@dataclass(frozen=True)
class CreatedApiKey:
    key: ApiKey
    secret: str  # shown once


def _require_person(actor: Actor, what: str) -> None:
    """Keys are made and revoked by people (a signed-in user) or the system (the CLI); an API key,
    an operator's or a provider's, cannot make or revoke another: a leaked key must not mint
    fresh ones that outlive its revocation."""
    person = actor.type is ActorType.USER
    the_system = actor.type is ActorType.SYSTEM and actor.provider_id is None
    if not (person or the_system):
        raise Forbidden(f"only a signed-in user may {what}; a key cannot make or revoke another")


def _check_scopes(scopes: Sequence[str], allowed: frozenset[str]) -> list[str]:
    wanted = sorted(set(scopes))
    unknown = [s for s in wanted if s not in allowed]
    if not wanted or unknown:
        raise InvalidInput(
            f"scopes must be a non-empty subset of {sorted(allowed)}"
            + (f"; unknown: {unknown}" if unknown else ""),
            field="scopes",
        )
    return wanted


async def create_api_key(
    db: Database, *, actor: Actor, name: str, scopes: list[str], provider_id: uuid.UUID | None = None
) -> CreatedApiKey:
    """`provider_id` given (or the caller a provider user): a provider's key, provider scopes only."""
    _require_person(actor, "make API keys")
    bound = own_provider_id(actor, provider_id)  # a provider user: its own (a foreign id NOT_FOUND)
    clean_name = _guards.text(name, field="name", max_length=100)
    wanted = _check_scopes(scopes, PROVIDER_SCOPES if bound is not None else SCOPES)
    prefix = secrets.token_hex(4)
    secret = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        name=clean_name,
        prefix=f"{KEY_PREFIX}{prefix}",
        key_hash=digest(secret),
        scopes=wanted,
        created_by=actor.id,
        provider_id=bound,
        provider_user_id=actor.id if actor.provider_id is not None else None,
    )
    async with db.begin() as session:
        if bound is not None and await session.get(Provider, bound) is None:
            raise NotFound("provider", bound)
        session.add(key)
        await session.flush()
        record(
            session,
            actor,
            AuditAction.API_KEY_CREATED,
            entity_type="api_key",
            entity_id=key.id,
            name=clean_name,
            scopes=wanted,
            provider_id=bound,
        )
    return CreatedApiKey(key=key, secret=secret)


async def revoke_api_key(db: Database, *, actor: Actor, key_id: uuid.UUID) -> ApiKey:
    """A provider principal revokes only its provider's keys; another's answers NOT_FOUND."""
    _require_person(actor, "revoke API keys")
    async with db.begin() as session:
        stmt = sa.select(ApiKey).where(col(ApiKey.id) == key_id).with_for_update()
        if actor.provider_id is not None:
            stmt = stmt.where(col(ApiKey.provider_id) == actor.provider_id)
        key = (await session.execute(stmt)).scalar_one_or_none()
        if key is None:
            raise NotFound("API key", key_id)
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            record(session, actor, AuditAction.API_KEY_REVOKED, entity_type="api_key", entity_id=key.id)
    return key
