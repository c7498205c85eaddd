"""The per-request (per-connection for WebSockets) context every resolver receives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from dataclasses import dataclass, field
from typing import NoReturn, cast

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

log = logging.getLogger("leadwheel.auth")

# graphql-transport-ws close code for a socket whose credential was revoked while it was open
REVOKED_CLOSE_CODE = 4403


class SignedInSockets:
    """An API process's open WebSockets, by the hash of the credential each signed in with. A
    revocation announced on Redis (logout, revokeApiKey, a disabled or removed provider user)
    closes the sockets signed in with it: their live subscriptions stop at once, as requests do."""

    def __init__(self) -> None:
        self._sockets: weakref.WeakKeyDictionary[WebSocket, str] = weakref.WeakKeyDictionary()
        self._closing: set[asyncio.Task[None]] = set()

    def add(self, socket: WebSocket, token_hash: str) -> None:
        self._sockets[socket] = token_hash

    def on_announcement(self, data: bytes | None) -> None:
        """ProgressHub.watch handler. None (announcements may have been lost) closes nothing: the
        credential is checked again on the socket's next connection."""
        if data is None:
            return
        revoked = data.decode()
        for socket, token_hash in list(self._sockets.items()):
            if token_hash == revoked:
                del self._sockets[socket]
                task = asyncio.get_running_loop().create_task(_close(socket))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)


async def _close(socket: WebSocket) -> None:
    with contextlib.suppress(Exception):  # already closing or gone: nothing left to stop
        await socket.close(code=REVOKED_CLOSE_CODE, reason="credentials revoked: sign in again")
    log.info("auth.socket_closed_after_revocation")


class _BeforeThePrincipal:
    """Context.loaders until the principal is known. Loaders are scoped to the principal (a
    provider's see only its own rows), so using them earlier is a programming error, not a read."""

    def __getattr__(self, name: str) -> NoReturn:
        raise RuntimeError(
            f"context.loaders.{name} used before the principal is known: await info.context.actor() "
            "first (every permission class does)"
        )


_BEFORE_THE_PRINCIPAL = cast(Loaders, _BeforeThePrincipal())


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    db: Database
    redis: Redis
    settings: Settings
    dispatcher: Dispatcher
    publisher: Publisher
    hub: ProgressHub
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    credential: str | None = None
    connection_params: dict[str, object] | None = None  # filled by Strawberry on connection_init
    credentials: CredentialCache | None = None  # this process's verified credentials
    sockets: SignedInSockets | None = None  # this process's signed-in WebSockets
    _actor: Actor | None = None
    # built by actor() from the principal, never passed in: no unscoped loaders to forget to narrow
    loaders: Loaders = field(default=_BEFORE_THE_PRINCIPAL, init=False)

    async def actor(self) -> Actor:
        """Authenticated lazily, once: public operations (login) need no credentials. Every
        operation that reads data authenticates first (its permission class), and its loaders
        are made then, scoped to the principal (a provider principal's to its provider)."""
        if self._actor is None:
            if not self.credential:
                raise Unauthenticated("sign in: send 'Authorization: Bearer <access token or API key>'")
            actor = await auth.authenticate(self.db, self.credential, self.credentials)
            self.loaders = make_loaders(self.db, provider_id=actor.provider_id)
            self._actor = actor
        return self._actor

    def fresh_loaders(self) -> None:
        """New loaders (same scope): a WebSocket's context lives as long as the connection, and a
        subscription whose messages resolve nested fields must neither serve old rows nor keep
        every row it ever loaded."""
        if self._actor is None:
            raise RuntimeError("fresh_loaders before the principal is known: await context.actor() first")
        self.loaders = make_loaders(self.db, provider_id=self._actor.provider_id)

    async def revoked(self, *token_hashes: str) -> None:
        """After a revocation committed: forgotten here at once, announced to every process
        (this one included: its sockets signed in with them close)."""
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
