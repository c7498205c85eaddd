"""The per-request (per-connection for WebSockets) context every resolver receives."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.types import Info as StrawberryInfo

from app.db import Database
from app.errors import Unauthenticated
from app.progress.hub import ProgressHub
from app.progress.publish import Publisher
from app.resolvers.loaders import Loaders, make_loaders
from app.services import auth
from app.services.audit import Actor
from app.services.credentials import CredentialCache, announce_revoked
from app.services.dispatch import Dispatcher
from app.settings import Settings


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    db: Database
    redis: Redis
    settings: Settings
    loaders: Loaders
    dispatcher: Dispatcher
    publisher: Publisher
    hub: ProgressHub
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    credential: str | None = None
    connection_params: dict[str, object] | None = None  # filled by Strawberry on connection_init
    credentials: CredentialCache | None = None  # this process's verified credentials
    _actor: Actor | None = None

    async def actor(self) -> Actor:
        """Authenticated lazily, once: public operations (login) need no credentials. Every
        operation that reads data authenticates first (its permission class), and a provider
        principal's loaders are replaced then by ones scoped to its provider."""
        if self._actor is None:
            if not self.credential:
                raise Unauthenticated("sign in: send 'Authorization: Bearer <access token or API key>'")
            actor = await auth.authenticate(self.db, self.credential, self.credentials)
            if actor.provider_id is not None:
                self.loaders = make_loaders(self.db, provider_id=actor.provider_id)
            self._actor = actor
        return self._actor

    def fresh_loaders(self) -> None:
        """New loaders (same scope): a WebSocket's context lives as long as the connection, and a
        subscription whose messages resolve nested fields must neither serve old rows nor keep
        every row it ever loaded."""
        own = self._actor.provider_id if self._actor is not None else None
        self.loaders = make_loaders(self.db, provider_id=own)

    async def revoked(self, *token_hashes: str) -> None:
        """After a revocation committed: forgotten here at once, announced to the other processes."""
        if self.credentials is not None:
            for token_hash in token_hashes:
                self.credentials.forget(token_hash)
        await announce_revoked(self.redis, *token_hashes)

    @property
    def client(self) -> str:
        return self.request.client.host if self.request.client else "unknown"


Info = StrawberryInfo[Context, None]


def credential_from_headers(authorization: str | None, api_key: str | None) -> str | None:
    if api_key:
        return api_key.strip()
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None
