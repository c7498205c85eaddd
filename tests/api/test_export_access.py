"""The CSV export of assignments (/exports/assignments.csv) is an operator's report over every
provider: it needs the `read` scope, which no provider principal holds (a provider user or key has
`provider:read` / `provider:write`), so each is refused with 403 FORBIDDEN and gets no row, with or
without a niche; an admin and a read-only admin key get both sides' rows."""

from __future__ import annotations

import csv
import io

import httpx
from redis.asyncio import Redis

from app.db import Database
from app.services import api_keys
from app.services.audit import SYSTEM
from tests.api.conftest import Api
from tests.api.world import World, build_world, leaked

EXPORT = "/exports/assignments.csv"


async def get_export(api: Api, headers: dict[str, str], params: dict[str, str]) -> httpx.Response:
    return await api.client.get(EXPORT, headers=headers, params=params)


def provider_credentials(world: World, read_only_key: str) -> dict[str, str]:
    return {
        "A's user": world.a.user_token,
        "A's key": world.a.key_secret,
        "A's read-only key": read_only_key,
        "B's user": world.b.user_token,
    }


async def test_provider_principals_are_refused_the_export(api: Api, db: Database, redis: Redis) -> None:
    world = await build_world(db, redis)
    read_only = await api_keys.create_api_key(
        db, actor=SYSTEM, name="a-reader", scopes=["provider:read"], provider_id=world.a.provider
    )
    wrong = []
    for label, secret in provider_credentials(world, read_only.secret).items():
        for sent in ({"Authorization": f"Bearer {secret}"}, {"X-API-Key": secret}):
            for params in ({}, {"nicheId": str(world.a.niche)}, {"nicheId": str(world.b.niche)}):
                response = await get_export(api, sent, params)
                where = f"{label} with {next(iter(sent))} and {params or 'no niche'}"
                if response.status_code != 403 or not response.headers["content-type"].startswith(
                    "application/json"
                ):
                    wrong.append(f"{where}: {response.status_code} {response.text[:200]}")
                    continue
                if response.json()["errors"][0]["extensions"]["code"] != "FORBIDDEN":
                    wrong.append(f"{where}: {response.text[:200]}")
                seen = leaked(response.text, world.a.secrets + world.b.secrets)
                if seen:
                    wrong.append(f"{where}: rows' data in the refusal: {seen}")
    assert wrong == [], "\n".join(wrong)


async def test_operators_export_both_sides(api: Api, db: Database, redis: Redis) -> None:
    world = await build_world(db, redis)
    for label, secret in (("admin", world.admin_token), ("read-only admin key", world.read_key)):
        response = await get_export(api, {"Authorization": f"Bearer {secret}"}, {})
        assert response.status_code == 200, f"{label}: {response.text[:200]}"
        rows = list(csv.DictReader(io.StringIO(response.text)))
        exported = {r["assignment_id"] for r in rows}
        for side in (world.a, world.b):
            assert {str(side.assignment), str(side.shared_assignment)} <= exported, label
