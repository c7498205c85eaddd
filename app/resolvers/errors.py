"""The one place errors become client errors: every GraphQL error leaves with `extensions.code`
from SPEC §5 and a message a person can act on; unexpected ones are logged in full and leave as
INTERNAL with a request id, never a stack trace or SQL. PostgreSQL or Redis out of reach is not a
defect: it leaves as UNAVAILABLE, and an HTTP answer carrying one is a 503 with Retry-After."""

from __future__ import annotations

import logging

from graphql.error import GraphQLError
from pydantic import ValidationError
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from starlette.responses import Response
from strawberry.extensions import MaskErrors

from app.db import session_ended, sqlstate_of
from app.errors import DomainError, ErrorCode, Unavailable

log = logging.getLogger("leadwheel.graphql")

# besides a session the server ended or refused (app/db.session_ended): the server is full now
_TOO_MANY_CONNECTIONS = "53300"


def unavailable(cause: BaseException | None) -> Unavailable | None:
    """The client's error for a failure to reach PostgreSQL or Redis, or None: anything else (a
    bad statement, a wrong password in the settings, a bug) is not for the client to retry."""
    if isinstance(cause, Unavailable):
        return cause
    server = _unreachable_server(cause)
    if server is None:
        return None
    return Unavailable(
        f"{server} cannot be reached at the moment (restarting or unreachable): retry in a few seconds"
    )


def _unreachable_server(cause: BaseException | None) -> str | None:
    if isinstance(cause, RedisConnectionError | RedisTimeoutError):
        return None if isinstance(cause, RedisAuthenticationError) else "Redis"
    if isinstance(cause, DBAPIError):
        # connection_invalidated: a pooled connection found dead (the server restarted under it)
        if cause.connection_invalidated or isinstance(cause.orig, OSError):
            return "PostgreSQL"
        return "PostgreSQL" if _unreachable_state(sqlstate_of(cause)) else None
    if _unreachable_state(getattr(cause, "sqlstate", None)):  # asyncpg's own, raised on connect
        return "PostgreSQL"
    if isinstance(cause, OSError):
        # connecting to PostgreSQL (refused, no socket file, timed out): asyncpg raises these
        # unwrapped; redis-py wraps its own in its ConnectionError
        return "PostgreSQL"
    return None


def brief(cause: BaseException | None) -> str:
    """One line for the log: the driver's error without SQLAlchemy's SQL and parameters (an outage
    is logged once per failed request, and parameters may hold personal data)."""
    inner = cause.orig if isinstance(cause, DBAPIError) and cause.orig is not None else cause
    text = str(inner).splitlines()[0] if str(inner) else ""
    return f"{type(inner).__name__}: {text[:200]}"


def _unreachable_state(state: object) -> bool:
    return session_ended(state) or state == _TOO_MANY_CONNECTIONS


def to_client_error(error: GraphQLError, request_id: str) -> GraphQLError:
    cause = error.original_error
    outage = unavailable(cause)
    if outage is not None:
        log.warning("graphql.unavailable request_id=%s path=%s %s", request_id, error.path, brief(cause))
        cause = outage
    extensions: dict[str, object]
    if isinstance(cause, DomainError):
        extensions = {"code": cause.code.value}
        if cause.field:
            extensions["field"] = cause.field
        if isinstance(cause, Unavailable):
            extensions["retryAfterSeconds"] = cause.retry_after_seconds
        message = str(cause)
    elif isinstance(cause, ValidationError):
        first = cause.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        extensions = {"code": ErrorCode.INVALID_INPUT.value, "field": field}
        message = f"{field}: {first['msg']}"
    elif _is_data_exception(cause):
        # PostgreSQL refused a value (a NUL character, a number out of range): the transaction was
        # rolled back, so it is bad input, not an internal error
        extensions = {"code": ErrorCode.INVALID_INPUT.value}
        message = "a value cannot be stored: it contains a NUL character or is out of range"
    elif error.path is None:  # before execution: syntax, validation, variable coercion, limits
        extensions = {"code": ErrorCode.INVALID_INPUT.value}
        message = error.message
    else:
        log.error("graphql.unexpected request_id=%s path=%s", request_id, error.path, exc_info=cause)
        extensions = {"code": ErrorCode.INTERNAL.value, "requestId": request_id}
        message = f"Internal error (logged as {request_id})"
    return GraphQLError(message, nodes=error.nodes, path=error.path, extensions=extensions)


def _is_data_exception(cause: BaseException | None) -> bool:
    """SQLSTATE class 22: data exception."""
    state = sqlstate_of(cause) if isinstance(cause, DBAPIError) else getattr(cause, "sqlstate", None)
    return isinstance(state, str) and state.startswith("22")


class ClientErrors(MaskErrors):
    """MaskErrors' hook, applied to every error. Overrides and calls MaskErrors' private methods
    (listed and checked in app/internals/strawberry_graphql.py)."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=lambda _: True)

    def _process_result(self, result: object) -> None:
        # MaskErrors' own check is isinstance() against a runtime Protocol: a fifth of the cost of
        # relaying one subscription event. The same test, as one attribute read.
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = processed = self._process_errors(errors)  # type: ignore[attr-defined]
            if any((e.extensions or {}).get("code") == ErrorCode.UNAVAILABLE.value for e in processed):
                self._answer_unavailable()

    def _answer_unavailable(self) -> None:
        """HTTP: 503 with Retry-After, through the response Strawberry merges into its own (a
        WebSocket has no status: its messages carry the code and retryAfterSeconds)."""
        response = getattr(self.execution_context.context, "response", None)
        if isinstance(response, Response):
            response.status_code = 503
            response.headers["Retry-After"] = str(Unavailable.retry_after_seconds)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        context = self.execution_context.context
        request_id = getattr(context, "request_id", "-")
        return to_client_error(error, request_id)
