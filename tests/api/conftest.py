"""The API over httpx.ASGITransport (lifespan run by hand), on the real database and Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pyotp
import pytest
from redis.asyncio import Redis

from app.db import Database
from app.main import create_app
from app.progress.publish import RedisPublisher
from app.services import auth
from app.settings import Environment, Settings
from app.tasks.dispatch import InlineDispatcher

PASSWORD = "correct horse battery staple"


def api_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"environment": Environment.TEST, "graphql_ide": True}
    return Settings(**(values | overrides))


@dataclass
class Api:
    client: httpx.AsyncClient
    token: str | None = None

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        bearer = token if token is not None else self.token
        sent = dict(headers or {})
        if bearer:
            sent["Authorization"] = f"Bearer {bearer}"
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=sent
        )
        assert response.status_code in (200, 413), response.text
        return dict(response.json())

    async def ok(self, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        body = await self.gql(query, variables, **kw)
        assert "errors" not in body, body["errors"]
        return dict(body["data"])


def error_code(body: dict[str, Any]) -> str:
    assert body.get("errors"), body
    return str(body["errors"][0]["extensions"]["code"])


@pytest.fixture
async def api(db: Database, redis: Redis) -> AsyncIterator[Api]:
    settings = api_settings()
    dispatcher = InlineDispatcher(db, settings, RedisPublisher(redis))  # workers: tests/tasks
    app = create_app(settings, db=db, redis=redis, dispatcher=dispatcher)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client)


@dataclass
class Admin:
    email: str
    secret: str
    id: uuid.UUID


def next_code(secret: str, used_step: int | None) -> str:
    """A valid code for a step not used yet (the server refuses replays within the ±1 window)."""
    totp = pyotp.TOTP(secret)
    import time

    current = int(time.time()) // 30
    for step in (current - 1, current, current + 1):
        if used_step is None or step > used_step:
            if step >= current:
                return totp.at(step * 30)
    return totp.at((current + 1) * 30)


async def sign_in(api: Api, db: Database, admin: Admin) -> str:
    data = await api.ok(
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { challenge } }",
        {"e": admin.email, "p": PASSWORD},
    )
    used = (await auth.get_admin(db, admin.id)).last_totp_step
    token = await api.ok(
        "mutation($c: String!, $code: String!) { verifyMfa(challenge: $c, code: $code) { token } }",
        {"c": data["login"]["challenge"], "code": next_code(admin.secret, used)},
    )
    return str(token["verifyMfa"]["token"])


@pytest.fixture
async def admin(db: Database) -> Admin:
    created = await auth.create_admin(
        db, email="ops@example.test", password=PASSWORD, settings=api_settings()
    )
    return Admin(email="ops@example.test", secret=created.admin.totp_secret, id=created.admin.id)


@pytest.fixture
async def admin_api(api: Api, db: Database, admin: Admin) -> Api:
    api.token = await sign_in(api, db, admin)
    return api
