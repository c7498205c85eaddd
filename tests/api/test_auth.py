"""Login + TOTP MFA, replay refusal, lockout, token expiry and revocation, API keys, rate limits."""

import asyncio
import time

import pyotp
import sqlalchemy as sa

from app.db import Database
from tests.api.conftest import PASSWORD, Admin, Api, error_code, next_code, sign_in

LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { challenge expiresAt } }"
VERIFY = "mutation($c: String!, $code: String!) { verifyMfa(challenge: $c, code: $code) { token expiresAt } }"


async def _challenge(api: Api, admin: Admin) -> str:
    return str((await api.ok(LOGIN, {"e": admin.email, "p": PASSWORD}))["login"]["challenge"])


async def test_no_credentials_wrong_password_and_unknown_email(api: Api, admin: Admin) -> None:
    assert error_code(await api.gql("{ niches { id } }")) == "UNAUTHENTICATED"
    wrong = await api.gql(LOGIN, {"e": admin.email, "p": "not the password"})
    unknown = await api.gql(LOGIN, {"e": "nobody@example.test", "p": PASSWORD})
    assert error_code(wrong) == error_code(unknown) == "UNAUTHENTICATED"
    assert wrong["errors"][0]["message"] == unknown["errors"][0]["message"]  # no account enumeration


async def test_challenge_is_not_an_access_token(api: Api, admin: Admin) -> None:
    challenge = await _challenge(api, admin)
    body = await api.gql("{ niches { id } }", token=challenge)
    assert error_code(body) == "MFA_REQUIRED"


async def test_a_code_is_accepted_once(api: Api, db: Database, admin: Admin) -> None:
    code = next_code(admin.secret, None)
    first = await api.gql(VERIFY, {"c": await _challenge(api, admin), "code": code})
    assert "errors" not in first
    replay = await api.gql(VERIFY, {"c": await _challenge(api, admin), "code": code})
    assert error_code(replay) == "UNAUTHENTICATED"
    assert "already used" in replay["errors"][0]["message"]


async def test_challenge_is_single_use(api: Api, db: Database, admin: Admin) -> None:
    challenge = await _challenge(api, admin)
    await api.ok(VERIFY, {"c": challenge, "code": next_code(admin.secret, None)})
    body = await api.gql(VERIFY, {"c": challenge, "code": pyotp.TOTP(admin.secret).now()})
    assert error_code(body) == "UNAUTHENTICATED"


async def test_lockout_after_five_failures(api: Api, db: Database, admin: Admin) -> None:
    challenge = await _challenge(api, admin)
    for _ in range(5):
        body = await api.gql(VERIFY, {"c": challenge, "code": "000000"})
        assert error_code(body) == "UNAUTHENTICATED"
    locked = await api.gql(VERIFY, {"c": challenge, "code": next_code(admin.secret, None)})
    assert error_code(locked) == "RATE_LIMITED"
    assert "locked" in locked["errors"][0]["message"]
    assert error_code(await api.gql(LOGIN, {"e": admin.email, "p": PASSWORD})) == "RATE_LIMITED"


async def test_expired_and_revoked_tokens(api: Api, db: Database, admin: Admin) -> None:
    token = await sign_in(api, db, admin)
    await api.ok("{ me { label } }", token=token)
    assert (await api.ok("mutation { logout }", token=token))["logout"] is True
    revoked = await api.gql("{ me { label } }", token=token)
    assert error_code(revoked) == "UNAUTHENTICATED"
    assert "revoked" in revoked["errors"][0]["message"]
    other = await sign_in(api, db, admin)
    async with db.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE access_tokens SET expires_at = now() - interval '1 second'"))
    expired = await api.gql("{ me { label } }", token=other)
    assert error_code(expired) == "UNAUTHENTICATED"
    assert "expired" in expired["errors"][0]["message"]


async def test_api_keys_are_shown_once_scoped_and_revocable(admin_api: Api, db: Database) -> None:
    created = (
        await admin_api.ok(
            """mutation { createApiKey(name: "importer", scopes: ["read", "leads:write"]) {
             secret apiKey { id prefix scopes } } }"""
        )
    )["createApiKey"]
    secret = created["secret"]
    assert secret.startswith(created["apiKey"]["prefix"])
    async with db.engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT key_hash FROM api_keys"))).scalar_one()
    assert secret not in stored  # only the hash is kept
    me = (await admin_api.ok("{ me { actorType scopes } }", token=secret))["me"]
    assert me == {"actorType": "API_KEY", "scopes": ["leads:write", "read"]}
    await admin_api.ok(
        "mutation($id: UUID!) { revokeApiKey(id: $id) { revokedAt } }", {"id": created["apiKey"]["id"]}
    )
    assert error_code(await admin_api.gql("{ me { label } }", token=secret)) == "UNAUTHENTICATED"


async def test_login_is_rate_limited_per_client_address(api: Api) -> None:
    """Unknown emails: no account to lock, so only the Redis limit (10 a minute) can refuse. The
    limit counts per calendar minute: the eleven attempts are made within one (a run that crossed
    a minute's end was counted in two windows and failed now and then)."""
    left = 60 - time.time() % 60
    if left < 5:
        await asyncio.sleep(left + 0.05)
    bodies = [await api.gql(LOGIN, {"e": f"u{i}@example.test", "p": "x"}) for i in range(11)]
    assert [error_code(b) for b in bodies[:10]] == ["UNAUTHENTICATED"] * 10
    assert error_code(bodies[10]) == "RATE_LIMITED"
    assert "too many attempts" in bodies[10]["errors"][0]["message"]
