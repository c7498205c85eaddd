"""Provider users (app/services/provider_users.py): the invite goes out through the outbox and is
kept hashed; accepting it is single use and expires; enrollment cannot be skipped; then the same
sign-in as admins; disabling and removing stop the user's tokens and the keys it made."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pyotp
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis

from app.db import Database
from app.errors import Conflict, Forbidden, InvalidInput, MfaRequired, NotFound, RateLimited, Unauthenticated
from app.models.audit import ActorType
from app.models.base import utcnow
from app.models.distribution import NotificationStatus
from app.services import api_keys, auth, notifications, provider_users
from app.services.audit import SYSTEM, Actor
from app.services.tokens import PROVIDER_SCOPES, digest
from app.settings import Settings
from tests.factories import make_provider

SETTINGS = Settings(_env_file=None, smtp_host=None)  # type: ignore[call-arg]
PASSWORD = "a long buyer password"


def token_of(url: str) -> str:
    return url.split("#invite=", 1)[1]


async def _scalar(db: Database, sql: str, **params: object) -> object:
    async with db.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar()


async def invite(db: Database, provider_id: uuid.UUID, email: str = "buyer@acme.test") -> str:
    invited = await provider_users.invite(
        db, actor=SYSTEM, provider_id=provider_id, email=email, settings=SETTINGS
    )
    assert invited.invite_url.startswith(SETTINGS.portal_url + "#invite=lwi_")
    return token_of(invited.invite_url)


async def enroll(db: Database, redis: Redis, token: str) -> tuple[str, str]:
    """Accepts and confirms: (access token, TOTP secret)."""
    enrollment = await provider_users.accept_invite(
        db, redis, token=token, password=PASSWORD, client="t", settings=SETTINGS
    )
    secret = pyotp.parse_uri(enrollment.provisioning_uri).secret
    issued = await provider_users.confirm_enrollment(
        db, redis, token=enrollment.token, code=pyotp.TOTP(secret).now(), client="t", settings=SETTINGS
    )
    return issued.token, secret


async def test_the_invite_goes_through_the_outbox_and_only_its_hash_is_kept(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    provider = await make_provider(db, name="Acme Roofing")
    token = await invite(db, provider.id)
    assert (
        await _scalar(db, "SELECT count(*) FROM provider_invites WHERE token_hash = :h", h=digest(token)) == 1
    )
    assert await _scalar(db, "SELECT count(*) FROM provider_invites WHERE token_hash = :t", t=token) == 0
    row = await _scalar(
        db, "SELECT variables->>'invite_url' FROM notifications WHERE template = 'provider_invite'"
    )
    assert row == f"{SETTINGS.portal_url}#invite={token}"  # until it is sent
    with caplog.at_level(logging.INFO, logger="leadwheel.notifications"):
        sent = await notifications.deliver_unsent(db, settings=SETTINGS)
    assert list(sent.values()) == [NotificationStatus.SENT]
    assert token in caplog.text and "Acme Roofing" in caplog.text  # no SMTP: in the log
    after = await _scalar(
        db, "SELECT variables->>'invite_url' FROM notifications WHERE template = 'provider_invite'"
    )
    assert after == "[sent]"  # the outbox keeps no usable token once it is out


async def test_expired_reused_and_tampered_invites_are_refused(db: Database, redis: Redis) -> None:
    provider = await make_provider(db)
    token = await invite(db, provider.id)
    with pytest.raises(Unauthenticated, match="unknown invite"):
        await provider_users.accept_invite(
            db, redis, token=token[:-2] + "xx", password=PASSWORD, client="t", settings=SETTINGS
        )
    await provider_users.accept_invite(
        db, redis, token=token, password=PASSWORD, client="t", settings=SETTINGS
    )
    with pytest.raises(Unauthenticated, match="already used"):
        await provider_users.accept_invite(
            db, redis, token=token, password=PASSWORD, client="t", settings=SETTINGS
        )
    again = await invite(db, provider.id)  # not enrolled yet: a new invite
    async with db.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE provider_invites SET expires_at = now() - interval '1 second'"))
    with pytest.raises(Unauthenticated, match="expired"):
        await provider_users.accept_invite(
            db, redis, token=again, password=PASSWORD, client="t", settings=SETTINGS
        )


async def test_by_default_an_invite_expires_72_hours_after_it_is_made(db: Database, redis: Redis) -> None:
    assert Settings.model_fields["invite_ttl_hours"].default == 72
    provider = await make_provider(db)
    invited = await provider_users.invite(
        db, actor=SYSTEM, provider_id=provider.id, email="a@acme.test", settings=SETTINGS
    )
    async with db.engine.connect() as conn:
        created, expires = (
            await conn.execute(sa.text("SELECT created_at, expires_at FROM provider_invites"))
        ).one()
    assert expires == invited.expires_at
    assert timedelta(hours=72) - timedelta(seconds=5) < expires - created <= timedelta(hours=72)
    email = await _scalar(db, "SELECT variables->>'expires_at' FROM notifications")
    assert email == f"{invited.expires_at:%Y-%m-%d %H:%M} UTC"  # the email tells the same time
    later = await invite(db, provider.id, "b@acme.test")
    async with db.engine.begin() as conn:  # as if made 71 h 59 min ago, and 72 h ago
        await conn.execute(
            sa.text(
                "UPDATE provider_invites SET expires_at = expires_at - CASE WHEN token_hash = :h"
                " THEN interval '72 hours' ELSE interval '71 hours 59 minutes' END"
            ),
            {"h": digest(later)},
        )
    await provider_users.accept_invite(
        db, redis, token=token_of(invited.invite_url), password=PASSWORD, client="t", settings=SETTINGS
    )
    with pytest.raises(Unauthenticated, match="expired"):
        await provider_users.accept_invite(
            db, redis, token=later, password=PASSWORD, client="t", settings=SETTINGS
        )


async def test_a_new_invite_replaces_the_unused_one(db: Database, redis: Redis) -> None:
    provider = await make_provider(db)
    first = await invite(db, provider.id)
    second = await invite(db, provider.id)
    with pytest.raises(Unauthenticated, match="expired"):
        await provider_users.accept_invite(
            db, redis, token=first, password=PASSWORD, client="t", settings=SETTINGS
        )
    await provider_users.accept_invite(
        db, redis, token=second, password=PASSWORD, client="t", settings=SETTINGS
    )


async def test_a_short_password_writes_nothing_and_spends_nothing(db: Database, redis: Redis) -> None:
    provider = await make_provider(db)
    token = await invite(db, provider.id)
    with pytest.raises(InvalidInput):
        await provider_users.accept_invite(
            db, redis, token=token, password="short", client="t", settings=SETTINGS
        )
    assert await _scalar(db, "SELECT count(*) FROM provider_invites WHERE used_at IS NOT NULL") == 0
    assert await _scalar(db, "SELECT count(*) FROM provider_users WHERE password_hash IS NOT NULL") == 0


async def test_enrollment_cannot_be_skipped(db: Database, redis: Redis) -> None:
    provider = await make_provider(db)
    token = await invite(db, provider.id)
    enrollment = await provider_users.accept_invite(
        db, redis, token=token, password=PASSWORD, client="t", settings=SETTINGS
    )
    with pytest.raises(MfaRequired, match="enrollment is not finished"):
        await auth.login(db, redis, email="buyer@acme.test", password=PASSWORD, client="t", settings=SETTINGS)
    with pytest.raises(Unauthenticated):  # neither the invite nor the enrollment token signs in
        await auth.authenticate(db, token)
    with pytest.raises(Unauthenticated):
        await auth.authenticate(db, enrollment.token)
    with pytest.raises(Unauthenticated, match="wrong"):
        await provider_users.confirm_enrollment(
            db, redis, token=enrollment.token, code="000000", client="t", settings=SETTINGS
        )
    assert await _scalar(db, "SELECT failed_attempts FROM provider_users") == 1  # counts toward lockout
    secret = pyotp.parse_uri(enrollment.provisioning_uri).secret
    issued = await provider_users.confirm_enrollment(
        db, redis, token=enrollment.token, code=pyotp.TOTP(secret).now(), client="t", settings=SETTINGS
    )
    actor = await auth.authenticate(db, issued.token)
    assert actor.provider_id == provider.id and actor.scopes == PROVIDER_SCOPES
    with pytest.raises(Unauthenticated, match="finished"):  # the enrollment token is spent
        await provider_users.confirm_enrollment(
            db, redis, token=enrollment.token, code=pyotp.TOTP(secret).now(), client="t", settings=SETTINGS
        )


async def test_an_expired_enrollment_needs_a_new_invite(db: Database, redis: Redis) -> None:
    provider = await make_provider(db)
    enrollment = await provider_users.accept_invite(
        db, redis, token=await invite(db, provider.id), password=PASSWORD, client="t", settings=SETTINGS
    )
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE provider_users SET enrollment_expires_at = now() - interval '1 s'")
        )
    with pytest.raises(Unauthenticated, match="expired"):
        await provider_users.confirm_enrollment(
            db, redis, token=enrollment.token, code="123456", client="t", settings=SETTINGS
        )
    await enroll(db, redis, await invite(db, provider.id))  # the new invite works


async def test_then_the_same_sign_in_as_admins(db: Database, redis: Redis) -> None:
    provider = await make_provider(db)
    _, secret = await enroll(db, redis, await invite(db, provider.id))
    challenge = await auth.login(
        db, redis, email="Buyer@Acme.test", password=PASSWORD, client="t", settings=SETTINGS
    )
    with pytest.raises(MfaRequired):
        await auth.authenticate(db, challenge.token)
    totp = pyotp.TOTP(secret)
    code = totp.at(utcnow() + timedelta(seconds=30))  # the enrollment used the current step
    issued = await auth.verify_mfa(
        db, redis, challenge=challenge.token, code=code, client="t", settings=SETTINGS
    )
    actor = await auth.authenticate(db, issued.token)
    assert (actor.type, actor.provider_id, actor.label) == (ActorType.USER, provider.id, "buyer@acme.test")
    owner = await _scalar(
        db,
        "SELECT provider_user_id IS NOT NULL AND admin_id IS NULL FROM access_tokens WHERE token_hash = :h",
        h=digest(issued.token),
    )
    assert owner is True  # the token says whose it is
    assert await auth.logout(db, actor=actor, token=issued.token)
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.authenticate(db, issued.token)
    for _ in range(SETTINGS.lockout_after_failures):  # the same lockout
        with pytest.raises(Unauthenticated):
            await auth.login(
                db, redis, email="buyer@acme.test", password="wrong password!", client="u", settings=SETTINGS
            )
    with pytest.raises(RateLimited, match="locked"):
        await auth.login(db, redis, email="buyer@acme.test", password=PASSWORD, client="v", settings=SETTINGS)


async def test_a_totp_code_is_accepted_once(db: Database, redis: Redis) -> None:
    """As for admins: the code that finished the enrollment does not sign in again, nor does a
    sign-in's code a second time."""
    provider = await make_provider(db)
    _, secret = await enroll(db, redis, await invite(db, provider.id))
    used = await _scalar(db, "SELECT last_totp_step FROM provider_users")
    assert isinstance(used, int)
    totp = pyotp.TOTP(secret)

    async def verify(code: str) -> str:
        challenge = await auth.login(
            db, redis, email="buyer@acme.test", password=PASSWORD, client="t", settings=SETTINGS
        )
        issued = await auth.verify_mfa(
            db, redis, challenge=challenge.token, code=code, client="t", settings=SETTINGS
        )
        return issued.token

    with pytest.raises(Unauthenticated, match="already used"):
        await verify(totp.at(used * 30))  # the enrollment's code
    following = totp.at((used + 1) * 30)
    assert (await auth.authenticate(db, await verify(following))).provider_id == provider.id
    with pytest.raises(Unauthenticated, match="already used"):
        await verify(following)


async def test_one_email_one_account(db: Database) -> None:
    provider, other = await make_provider(db), await make_provider(db)
    await auth.create_admin(db, email="ops@acme.test", password=PASSWORD, settings=SETTINGS)
    with pytest.raises(Conflict, match="admin"):
        await invite(db, provider.id, "ops@acme.test")
    await invite(db, provider.id, "buyer@acme.test")
    with pytest.raises(Conflict, match="another provider"):
        await invite(db, other.id, "buyer@acme.test")
    with pytest.raises(Conflict, match="provider user"):
        await auth.create_admin(db, email="buyer@acme.test", password=PASSWORD, settings=SETTINGS)
    with pytest.raises(NotFound):
        await invite(db, uuid.uuid4(), "new@acme.test")


async def test_an_enrolled_user_cannot_be_invited_again(db: Database, redis: Redis) -> None:
    provider = await make_provider(db)
    await enroll(db, redis, await invite(db, provider.id))
    with pytest.raises(Conflict, match="already has an account"):
        await invite(db, provider.id)


async def test_disabling_stops_tokens_and_the_keys_it_made_and_enabling_needs_a_new_sign_in(
    db: Database, redis: Redis
) -> None:
    provider = await make_provider(db)
    token, _ = await enroll(db, redis, await invite(db, provider.id))
    user = await auth.authenticate(db, token)
    key = await api_keys.create_api_key(db, actor=user, name="script", scopes=["provider:read"])
    admin_made = await api_keys.create_api_key(
        db, actor=SYSTEM, name="ops-made", scopes=["provider:read"], provider_id=provider.id
    )
    assert user.id is not None
    changed = await provider_users.set_disabled(db, actor=SYSTEM, user_id=user.id, disabled=True)
    assert set(changed.revoked_hashes) == {digest(token), digest(key.secret)}
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.authenticate(db, token)
    with pytest.raises(Unauthenticated, match="disabled"):
        await auth.authenticate(db, key.secret)
    assert (await auth.authenticate(db, admin_made.secret)).provider_id == provider.id  # not its key
    with pytest.raises(Unauthenticated, match="disabled"):
        await auth.login(db, redis, email="buyer@acme.test", password=PASSWORD, client="t", settings=SETTINGS)
    await provider_users.set_disabled(db, actor=SYSTEM, user_id=user.id, disabled=False)
    assert (await auth.authenticate(db, key.secret)).provider_id == provider.id
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.authenticate(db, token)


async def test_removing_deletes_the_user_and_revokes_its_keys(db: Database, redis: Redis) -> None:
    provider = await make_provider(db)
    token, _ = await enroll(db, redis, await invite(db, provider.id))
    user = await auth.authenticate(db, token)
    key = await api_keys.create_api_key(db, actor=user, name="script", scopes=["provider:write"])
    assert user.id is not None
    changed = await provider_users.remove(db, actor=SYSTEM, user_id=user.id)
    assert set(changed.revoked_hashes) == {digest(token), digest(key.secret)}
    assert await _scalar(db, "SELECT count(*) FROM provider_users") == 0
    assert await _scalar(db, "SELECT count(*) FROM access_tokens") == 0
    with pytest.raises(Unauthenticated):
        await auth.authenticate(db, token)
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.authenticate(db, key.secret)


async def test_provider_keys_are_bound_to_their_provider(db: Database) -> None:
    provider, other = await make_provider(db), await make_provider(db)
    buyer = Actor(ActorType.USER, uuid.uuid4(), scopes=PROVIDER_SCOPES, provider_id=provider.id)
    with pytest.raises(InvalidInput, match="scopes"):  # never an operator scope
        await api_keys.create_api_key(db, actor=buyer, name="k", scopes=["read"])
    with pytest.raises(InvalidInput, match="scopes"):
        await api_keys.create_api_key(db, actor=SYSTEM, name="k", scopes=["admin"], provider_id=provider.id)
    with pytest.raises(InvalidInput, match="scopes"):  # an operator key holds no provider scope
        await api_keys.create_api_key(db, actor=SYSTEM, name="k", scopes=["provider:read"])
    with pytest.raises(NotFound):  # another provider's id looks missing
        await api_keys.create_api_key(
            db, actor=buyer, name="k", scopes=["provider:read"], provider_id=other.id
        )
    key_actor = Actor(ActorType.API_KEY, uuid.uuid4(), scopes=PROVIDER_SCOPES, provider_id=provider.id)
    with pytest.raises(Forbidden):  # a key cannot make another
        await api_keys.create_api_key(db, actor=key_actor, name="k", scopes=["provider:read"])
    theirs = await api_keys.create_api_key(
        db, actor=SYSTEM, name="b", scopes=["provider:read"], provider_id=other.id
    )
    with pytest.raises(NotFound):
        await api_keys.revoke_api_key(db, actor=buyer, key_id=theirs.key.id)
    assert await _scalar(db, "SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL") == 0
