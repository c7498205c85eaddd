"""Credentials an API process has verified, remembered for a few seconds so that a request costs no
authentication statement (a third of a small query's time).

Revocation stays prompt: `logout`, `revoke_api_key` and disabling or removing a provider user forget
the credentials in their own process at once and announce them on Redis (REVOKED_CHANNEL) after
commit; every API process's ProgressHub hands the announcement to its cache. A verification that
was under way while an announcement arrived is not remembered (`epoch`): it may have read the
database just before the revocation committed. The cache answers only while that hub is subscribed, and is
emptied whenever the subscription is lost (announcements may have been missed meanwhile). What is
left is a process cut off from Redis while still subscribed, or an announcement that failed: then
a revoked credential is accepted for at most `ttl` seconds (AUTH_CACHE_SECONDS; 0 turns it off).
Expiry is checked on every request from the remembered expiry time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

from app.services.audit import Actor

log = logging.getLogger("leadwheel.auth")
REVOKED_CHANNEL = "lw:auth:revoked"


@dataclass
class Verified:
    actor: Actor
    expires_at: datetime | None  # access tokens
    last_used_at: datetime | None  # API keys: the last use written to the database


class CredentialCache:
    def __init__(self, ttl_seconds: float, live: Callable[[], bool], max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.live = live  # True while revocations can reach this process
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Verified]] = {}
        # bumped by every forget or announcement: a verification that started in an older epoch
        # may predate a revocation it did not see, so it is not remembered
        self.epoch = 0

    def get(self, token_hash: str) -> Verified | None:
        if self.ttl <= 0 or not self.live():
            return None
        found = self._entries.get(token_hash)
        if found is None:
            return None
        if time.monotonic() - found[0] > self.ttl:
            del self._entries[token_hash]
            return None
        return found[1]

    def put(self, token_hash: str, verified: Verified, *, since: int | None = None) -> None:
        """`since`: the epoch read before the database was; a revocation announced meanwhile
        leaves the result unremembered."""
        if self.ttl <= 0 or not self.live() or (since is not None and since != self.epoch):
            return
        if len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[token_hash] = (time.monotonic(), verified)

    def forget(self, token_hash: str) -> None:
        self.epoch += 1
        self._entries.pop(token_hash, None)

    def clear(self) -> None:
        self.epoch += 1
        self._entries.clear()

    def on_announcement(self, data: bytes | None) -> None:
        """ProgressHub.watch handler: a revoked hash, or None when announcements may have been lost."""
        if data is None:
            self.clear()
        else:
            self.forget(data.decode())


async def announce_revoked(redis: Redis, *token_hashes: str) -> bool:
    """After the revocation committed. False (logged) if Redis could not be told: the other API
    processes then accept the credential until their cache entry ages out."""
    if not token_hashes:
        return True
    try:
        pipe = redis.pipeline(transaction=False)
        for token_hash in token_hashes:
            pipe.publish(REVOKED_CHANNEL, token_hash)
        await pipe.execute()
    except Exception:  # noqa: BLE001  (the revocation itself is committed; never fail it)
        log.warning("auth.revocation_not_announced", exc_info=True)
        return False
    return True
