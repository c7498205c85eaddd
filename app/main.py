"""The Starlette app: /graphql (HTTP and graphql-transport-ws), /healthz, /readyz, /metrics, the CSV
export, and the pages (app/pages.py)."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UnsetType

from app import metrics
from app.db import Database, create_database
from app.errors import DomainError, Forbidden, InvalidInput, Unauthenticated, Unavailable
from app.internals import check_all
from app.internals.uvicorn import SERVER_SEND
from app.logging import configure_logging
from app.pages import page_routes
from app.progress.hub import ProgressHub
from app.progress.publish import RedisPublisher
from app.redis_client import connect as connect_redis
from app.resolvers.context import Context, SignedInSockets, credential_from_headers
from app.resolvers.errors import brief, unavailable
from app.resolvers.relay import RelayingHandler
from app.resolvers.schema import build_schema
from app.runtime import tune_gc
from app.services import auth, stats
from app.services.credentials import REVOKED_CHANNEL, CredentialCache
from app.services.dispatch import Dispatcher
from app.settings import Settings, get_settings
from app.tasks.broker import make_broker
from app.tasks.dispatch import TaskiqDispatcher

log = logging.getLogger("leadwheel.api")


class _WebSocket(ASGIWebSocketAdapter):
    """Strawberry closes every connection_init that on_ws_connect rejects with 4403 "Forbidden", and
    graphql-transport-ws carries no rejection payload: a client could not tell "PostgreSQL is
    restarting" from "bad credentials". A rejection for an outage records its close in the
    connection's state (`close_with`); that close is sent instead."""

    async def close(self, code: int, reason: str) -> None:
        code, reason = getattr(self.ws.state, "close_with", None) or (code, reason)
        await super().close(code, reason)


# RFC 6455 "Try Again Later": a server-side condition a client should retry after a while
WS_TRY_AGAIN_LATER = 1013


class GraphQLView(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = RelayingHandler
    websocket_adapter_class = _WebSocket

    def encode_json(self, data: object) -> str:
        # orjson: several times faster than json.dumps for a page of results or each of a feed's
        # messages; decoded to str so WebSocket frames stay text frames
        return orjson.dumps(data).decode()

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        state = request.app.state
        context_id = uuid.uuid4().hex[:16]
        structlog.contextvars.bind_contextvars(request_id=context_id)
        return Context(
            request_id=context_id,
            request=request,
            response=response,
            db=state.db,
            redis=state.redis,
            settings=state.settings,
            dispatcher=state.dispatcher,
            publisher=state.publisher,
            hub=state.hub,
            credentials=state.credentials,
            sockets=state.sockets,
            credential=credential_from_headers(
                request.headers.get("authorization"), request.headers.get("x-api-key")
            ),
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | None | dict[str, object]:
        """graphql-transport-ws: credentials come in the connection_init payload
        ({"authorization": "Bearer <token>"} or {"apiKey": "<key>"}); a bad one closes with 4403."""
        params = context.connection_params or {}
        raw = params.get("authorization") or params.get("Authorization")
        key = params.get("apiKey")
        context.credential = credential_from_headers(str(raw) if raw else None, str(key) if key else None)
        try:
            await context.actor()
            if context.sockets is not None and context.credential and isinstance(context.request, WebSocket):
                context.sockets.add(context.request, auth.digest(context.credential))
        except Exception as exc:
            error = exc if isinstance(exc, DomainError) else unavailable(exc)
            if isinstance(error, Unavailable):
                log.warning("ws.connect_unavailable request_id=%s %s", context.request_id, brief(exc))
                # a reason is at most 123 bytes
                reason = f"{error.code.value}: {error}".encode()[:123].decode(errors="ignore")
                context.request.state.close_with = (WS_TRY_AGAIN_LATER, reason)
            elif error is None:
                # never an abrupt close: refuse cleanly, log in full
                log.error("ws.connect_failed request_id=%s", context.request_id, exc_info=exc)
                raise ConnectionRejectionError({"code": "INTERNAL", "message": "try again"}) from exc
            raise ConnectionRejectionError({"code": error.code.value, "message": str(error)}) from exc
        return None  # accept; no connection_ack payload


class BodyLimit:
    """Refuses request bodies over `limit` bytes (413, as a GraphQL error) before they are parsed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = {
            "errors": [
                {
                    "message": f"request body is larger than {self.limit} bytes",
                    "extensions": {"code": "INVALID_INPUT"},
                }
            ]
        }
        await JSONResponse(body, status_code=413)(scope, receive, send)


class _TooLarge(Exception):
    pass


class KeepServerSend:
    """Puts the server's own `send` of a WebSocket into its scope (the endpoint sees Starlette's
    wrapper of it): app/resolvers/relay.py writes a subscriber's due frames with one write through
    it (app/internals/uvicorn.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND] = send
        await self.app(scope, receive, send)


async def export_assignments(request: Request) -> Response:
    """CSV of assignments in [from, to) (of one niche with nicheId), for admins or API keys with
    `read`: Bearer auth."""
    state = request.app.state
    credential = credential_from_headers(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    try:
        if not credential:
            raise Unauthenticated("send 'Authorization: Bearer <access token or API key>'")
        actor = await auth.authenticate(state.db, credential, state.credentials)
        if "read" not in actor.scopes:
            raise Forbidden("the CSV export needs the 'read' scope")
        bounds: dict[str, datetime | None] = {}
        for name in ("from", "to"):
            raw = request.query_params.get(name)
            value = None
            if raw:
                try:
                    value = datetime.fromisoformat(raw)
                except ValueError:
                    raise InvalidInput(
                        f"{name} must be an ISO 8601 time such as 2026-11-01T00:00:00Z", field=name
                    ) from None
                if value.tzinfo is None:
                    raise InvalidInput(f"{name} needs a time zone, e.g. 2026-11-01T00:00:00Z", field=name)
            bounds[name] = value
        niche_id = None
        if raw_niche := request.query_params.get("nicheId"):
            try:
                niche_id = uuid.UUID(raw_niche)
            except ValueError:
                raise InvalidInput("nicheId must be a niche's id (a UUID)", field="nicheId") from None
        rows = stats.assignments_csv(
            state.db, actor=actor, since=bounds["from"], until=bounds["to"], niche_id=niche_id
        )
        first = await anext(rows)  # validation errors surface here, before the 200
    except Exception as exc:
        error = exc if isinstance(exc, DomainError) else unavailable(exc)
        if error is None:
            raise
        if isinstance(error, Unavailable):
            log.warning("export.unavailable %s", brief(exc))
        return _error_response(error)

    async def body() -> AsyncIterator[str]:
        yield first
        async for chunk in rows:
            yield chunk

    return StreamingResponse(
        body(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="assignments.csv"'},
    )


_HTTP_STATUS = {"UNAUTHENTICATED": 401, "MFA_REQUIRED": 401, "FORBIDDEN": 403, "UNAVAILABLE": 503}


def _error_response(error: DomainError) -> Response:
    """A non-GraphQL endpoint's error, shaped as GraphQL's: {"errors": [{message, extensions.code}]}."""
    extensions: dict[str, object] = {"code": error.code.value}
    headers = {}
    if isinstance(error, Unavailable):
        extensions["retryAfterSeconds"] = error.retry_after_seconds
        headers["Retry-After"] = str(error.retry_after_seconds)
    return JSONResponse(
        {"errors": [{"message": str(error), "extensions": extensions}]},
        status_code=_HTTP_STATUS.get(error.code.value, 400),
        headers=headers,
    )


async def metrics_endpoint(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    body = await metrics.render(request.app.state.db, request.app.state.hub)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    checks: dict[str, Any] = {}
    try:
        async with request.app.state.db.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        checks["postgres"] = "ok"
    except Exception as exc:  # noqa: BLE001  (reported, not raised: this is the health check)
        checks["postgres"] = f"down: {type(exc).__name__}"
    try:
        await request.app.state.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"down: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


def api_argv(
    host: str = "127.0.0.1", port: int = 8000, *, quiet: bool = False, log_level: str = "info"
) -> list[str]:
    """uvicorn's arguments (after `python -m`) for the API as `leadwheel serve` runs it; the tests
    and benchmarks run the same. Per-message deflate is off: a progress event is a few hundred
    bytes, and compressing it once per subscriber was a tenth of the API's fan-out CPU (and costs
    a zlib context per socket)."""
    argv = ["uvicorn", "app.main:create_app", "--factory", "--host", host, "--port", str(port)]
    argv += ["--ws-per-message-deflate", "false"]
    if quiet:
        return argv + ["--log-level", "warning", "--no-access-log"]
    return argv + ["--log-level", log_level.lower()]


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    redis: Redis | None = None,
    dispatcher: Dispatcher | None = None,
) -> Starlette:
    """Given db / redis / dispatcher (tests) are used and left open; otherwise they are made from
    settings in the lifespan and closed after it. The default dispatcher sends jobs to the workers.
    Refuses (InternalsChanged) when a library moved under code that reaches into its internals."""
    check_all()
    settings = settings or get_settings()
    configure_logging(settings)
    view = GraphQLView(
        build_schema(settings),
        graphql_ide="graphiql" if settings.ide_enabled else None,
        allowed_origins=settings.allowed_origins,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own_db = db is None
        own_redis = redis is None
        if own_db and not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set (use `leadwheel serve` to start embedded servers)")
        if own_redis and not settings.redis_url:
            raise RuntimeError("REDIS_URL is not set (use `leadwheel serve` to start embedded servers)")
        app.state.settings = settings
        app.state.db = db or create_database(str(settings.database_url), settings)
        app.state.redis = redis or connect_redis(str(settings.redis_url))
        app.state.publisher = RedisPublisher(app.state.redis)
        app.state.hub = ProgressHub(app.state.redis)
        app.state.credentials = CredentialCache(settings.auth_cache_seconds, live=app.state.hub.ready.is_set)
        app.state.hub.watch(REVOKED_CHANNEL, app.state.credentials.on_announcement)
        app.state.sockets = SignedInSockets()
        app.state.hub.watch(REVOKED_CHANNEL, app.state.sockets.on_announcement)
        await app.state.hub.start()
        producer = None
        if dispatcher is None:
            # the stream and its consumer group must exist before the first job is sent
            producer = make_broker(str(settings.redis_url or ""), settings)
            await producer.startup()
        app.state.dispatcher = dispatcher or TaskiqDispatcher(producer)  # type: ignore[arg-type]
        if own_db:  # a server process (tests lend their database and keep their own collector)
            tune_gc()
        try:
            yield
        finally:
            await app.state.hub.stop()
            if producer is not None:
                await producer.shutdown()
            if own_redis:
                await app.state.redis.aclose()
            if own_db:
                await app.state.db.dispose()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            *page_routes(settings),  # /dashboard and /static, with the pages' hardening headers
            Route("/exports/assignments.csv", export_assignments),
            Route("/graphql", view, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", view),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(KeepServerSend)
    return app
