"""A buyer's account over GraphQL, end to end: an admin invites, the link arrives through the
outbox (in the log without SMTP), the buyer chooses a password, scans the QR code, confirms a
first code and is signed in; `me` shows its provider; it makes its own API key, pauses and
resumes its subscription (not one an operator paused); the admin lists and disables it."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import pyotp
import pytest
from redis.asyncio import Redis

from app.db import Database
from app.errors import Unauthenticated
from app.services import provider_users
from tests.api.conftest import Api, api_settings, error_code
from tests.factories import make_niche, make_provider, subscribe

INVITE = "mutation($p: UUID!, $e: String!) { inviteProviderUser(providerId: $p, email: $e) { id status } }"
ACCEPT = """mutation($t: String!, $p: String!) { acceptInvite(token: $t, password: $p) {
  enrollmentToken provisioningUri qrSvg expiresAt } }"""
CONFIRM = "mutation($t: String!, $c: String!) { confirmEnrollment(token: $t, code: $c) { token } }"
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { challenge } }"
ME = "{ me { actorType label scopes providerId provider { id name } } }"
PAUSE = "mutation($id: UUID!) { pauseSubscription(id: $id) { status pausedByOperator } }"
RESUME = "mutation($id: UUID!) { resumeSubscription(id: $id) { status pausedByOperator } }"
PASSWORD = "a long buyer password"


async def _invite(admin_api: Api, caplog: pytest.LogCaptureFixture, provider_id: Any, email: str) -> str:
    with caplog.at_level(logging.INFO, logger="leadwheel.notifications"):
        user = (await admin_api.ok(INVITE, {"p": str(provider_id), "e": email}))["inviteProviderUser"]
    assert user["status"] == "INVITED"
    found = re.search(r"#invite=(lwi_[\w-]+)", caplog.text)
    assert found, caplog.text  # sent through the outbox at once (the inline sender logs it)
    return found.group(1)


async def test_a_buyer_is_invited_enrolls_and_manages_its_own(
    admin_api: Api, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    niche, (level,) = await make_niche(db, levels=[(1000, 1)])
    provider = await make_provider(db, balance_cents=5000, name="Acme Roofing")
    subscription = await subscribe(db, provider, level)
    token = await _invite(admin_api, caplog, provider.id, "buyer@acme.test")
    enrollment = (await admin_api.ok(ACCEPT, {"t": token, "p": PASSWORD}, token=""))["acceptInvite"]
    assert enrollment["qrSvg"].startswith("<svg") and "otpauth://totp/" in enrollment["provisioningUri"]
    again = await admin_api.gql(ACCEPT, {"t": token, "p": PASSWORD}, token="")
    assert error_code(again) == "UNAUTHENTICATED" and "already used" in again["errors"][0]["message"]
    early = await admin_api.gql(LOGIN, {"e": "buyer@acme.test", "p": PASSWORD}, token="")
    assert error_code(early) == "MFA_REQUIRED" and "confirmEnrollment" in early["errors"][0]["message"]
    secret = pyotp.parse_uri(enrollment["provisioningUri"]).secret
    signed_in = await admin_api.ok(
        CONFIRM, {"t": enrollment["enrollmentToken"], "c": pyotp.TOTP(secret).now()}, token=""
    )
    buyer = signed_in["confirmEnrollment"]["token"]

    me = (await admin_api.ok(ME, token=buyer))["me"]
    assert me == {
        "actorType": "USER",
        "label": "buyer@acme.test",
        "scopes": ["provider:read", "provider:write"],
        "providerId": str(provider.id),
        "provider": {"id": str(provider.id), "name": "Acme Roofing"},
    }
    key = (
        await admin_api.ok(
            'mutation { createApiKey(name: "crm", scopes: ["provider:read"]) { secret apiKey { providerId } } }',
            token=buyer,
        )
    )["createApiKey"]
    assert key["apiKey"]["providerId"] == str(provider.id)
    assert (await admin_api.ok(ME, token=key["secret"]))["me"]["providerId"] == str(provider.id)

    sub = {"id": str(subscription.id)}
    assert (await admin_api.ok(PAUSE, sub, token=buyer))["pauseSubscription"] == {
        "status": "PAUSED",
        "pausedByOperator": False,
    }
    assert (await admin_api.ok(RESUME, sub, token=buyer))["resumeSubscription"]["status"] == "ACTIVE"
    assert (await admin_api.ok(PAUSE, sub))["pauseSubscription"]["pausedByOperator"] is True  # the admin
    refused = await admin_api.gql(RESUME, sub, token=buyer)
    assert error_code(refused) == "FORBIDDEN" and "operator paused" in refused["errors"][0]["message"]
    assert (await admin_api.ok(RESUME, sub))["resumeSubscription"]["status"] == "ACTIVE"
    refused = await admin_api.gql(
        'mutation($p: UUID!) { topUpBalance(providerId: $p, amountCents: 100, reference: "x") { id } }',
        {"p": str(provider.id)},
        token=buyer,
    )
    assert error_code(refused) == "FORBIDDEN"  # an operator's operation

    users = (
        await admin_api.ok(
            "query($p: UUID!) { providerUsers(providerId: $p) { edges { node { id email status } } } }",
            {"p": str(provider.id)},
        )
    )["providerUsers"]["edges"]
    assert [(u["node"]["email"], u["node"]["status"]) for u in users] == [("buyer@acme.test", "ACTIVE")]
    disabled = await admin_api.ok(
        "mutation($id: UUID!) { disableProviderUser(id: $id) { status } }", {"id": users[0]["node"]["id"]}
    )
    assert disabled["disableProviderUser"]["status"] == "DISABLED"
    assert error_code(await admin_api.gql(ME, token=buyer)) == "UNAUTHENTICATED"
    assert error_code(await admin_api.gql(ME, token=key["secret"])) == "UNAUTHENTICATED"


async def test_tampered_and_expired_secrets_over_the_api(admin_api: Api, db: Database) -> None:
    bad_invite = await admin_api.gql(ACCEPT, {"t": "lwi_" + "x" * 43, "p": PASSWORD}, token="")
    assert error_code(bad_invite) == "UNAUTHENTICATED"
    bad_enrollment = await admin_api.gql(CONFIRM, {"t": "lwe_" + "x" * 43, "c": "123456"}, token="")
    assert error_code(bad_enrollment) == "UNAUTHENTICATED"
    not_a_code = await admin_api.gql(CONFIRM, {"t": "lwe_x", "c": "12ab"}, token="")
    assert error_code(not_a_code) == "INVALID_INPUT"


async def test_accept_invite_and_confirm_enrollment_are_rate_limited_per_client_address(
    api: Api, db: Database, redis: Redis
) -> None:
    """Guessed invite and enrollment tokens: no account to lock, so only the Redis limit (10 a
    minute per client address, each mutation its own) can refuse. As in tests/api/test_auth.py, the
    attempts are made within one calendar minute (the limit's window)."""
    left = 60 - time.time() % 60
    if left < 10:
        await asyncio.sleep(left + 0.05)
    attempts = [
        (ACCEPT, {"t": "lwi_" + "x" * 43, "p": PASSWORD}),
        (CONFIRM, {"t": "lwe_" + "x" * 43, "c": "123456"}),
    ]
    for query, variables in attempts:
        bodies = [await api.gql(query, variables, token="") for _ in range(11)]
        assert [error_code(b) for b in bodies[:10]] == ["UNAUTHENTICATED"] * 10
        assert error_code(bodies[10]) == "RATE_LIMITED"
        assert "too many attempts" in bodies[10]["errors"][0]["message"]
    settings = api_settings()  # another address is not limited
    with pytest.raises(Unauthenticated):
        await provider_users.accept_invite(
            db, redis, token="lwi_x", password=PASSWORD, client="192.0.2.7", settings=settings
        )
    with pytest.raises(Unauthenticated):
        await provider_users.confirm_enrollment(
            db, redis, token="lwe_x", code="123456", client="192.0.2.7", settings=settings
        )
