"""The request context (app/resolvers/context.py): its loaders exist only once the principal is
known, scoped to it, so no resolver can read through unscoped ones by resolving before `actor()`."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from starlette.requests import Request

from app.db import Database
from app.progress.hub import ProgressHub
from app.progress.publish import RedisPublisher
from app.resolvers.context import Context
from app.services import api_keys
from app.services.audit import SYSTEM
from app.tasks.dispatch import InlineDispatcher
from tests.api.conftest import api_settings
from tests.factories import make_provider


def _context(db: Database, redis: Redis, credential: str) -> Context:
    settings, publisher = api_settings(), RedisPublisher(redis)
    return Context(
        request=Request({"type": "http", "headers": [], "client": ("127.0.0.1", 1)}),
        response=None,
        db=db,
        redis=redis,
        settings=settings,
        dispatcher=InlineDispatcher(db, settings, publisher),
        publisher=publisher,
        hub=ProgressHub(redis),
        credential=credential,
    )


async def test_loaders_exist_only_scoped_to_the_resolved_principal(db: Database, redis: Redis) -> None:
    mine, theirs = await make_provider(db), await make_provider(db)
    provider_key = await api_keys.create_api_key(
        db, actor=SYSTEM, name="buyer", scopes=["provider:read"], provider_id=mine.id
    )
    operator_key = await api_keys.create_api_key(db, actor=SYSTEM, name="ops", scopes=["read"])

    context = _context(db, redis, provider_key.secret)
    with pytest.raises(RuntimeError, match="before the principal is known"):
        context.loaders.provider.load(theirs.id)  # the use itself fails
    with pytest.raises(RuntimeError, match="before the principal is known"):
        context.fresh_loaders()
    await context.actor()
    assert (await context.loaders.provider.load(mine.id)) is not None
    assert (await context.loaders.provider.load(theirs.id)) is None  # another's row: not there
    context.fresh_loaders()  # a live feed's next message: new loaders, the same scope
    assert (await context.loaders.provider.load(theirs.id)) is None

    operator = _context(db, redis, operator_key.secret)
    await operator.actor()
    assert (await operator.loaders.provider.load(theirs.id)) is not None


def test_loaders_cannot_be_passed_in(db: Database, redis: Redis) -> None:
    """Made only from the principal: a caller cannot hand the context unscoped ones."""
    with pytest.raises(TypeError, match="loaders"):
        Context(  # type: ignore[call-arg]
            request=Request({"type": "http", "headers": [], "client": ("127.0.0.1", 1)}),
            response=None,
            db=db,
            redis=redis,
            settings=api_settings(),
            loaders=None,
            dispatcher=None,
            publisher=None,
            hub=None,
        )
