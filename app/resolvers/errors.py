"""The one place errors become client errors: every GraphQL error leaves with `extensions.code`
from SPEC §5 and a message a person can act on; unexpected ones are logged in full and leave as
INTERNAL with a request id, never a stack trace or SQL."""

from __future__ import annotations

import logging

from graphql.error import GraphQLError
from pydantic import ValidationError
from strawberry.extensions import MaskErrors

from app.errors import DomainError, ErrorCode

log = logging.getLogger("leadwheel.graphql")


def to_client_error(error: GraphQLError, request_id: str) -> GraphQLError:
    cause = error.original_error
    extensions: dict[str, object]
    if isinstance(cause, DomainError):
        extensions = {"code": cause.code.value}
        if cause.field:
            extensions["field"] = cause.field
        message = str(cause)
    elif isinstance(cause, ValidationError):
        first = cause.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        extensions = {"code": ErrorCode.INVALID_INPUT.value, "field": field}
        message = f"{field}: {first['msg']}"
    elif cause is None and error.path is None:  # before execution: syntax, validation, variables, limits
        extensions = {"code": ErrorCode.INVALID_INPUT.value}
        message = error.message
    else:
        log.error("graphql.unexpected request_id=%s path=%s", request_id, error.path, exc_info=cause)
        extensions = {"code": ErrorCode.INTERNAL.value, "requestId": request_id}
        message = f"Internal error (logged as {request_id})"
    return GraphQLError(message, nodes=error.nodes, path=error.path, extensions=extensions)


class ClientErrors(MaskErrors):
    """MaskErrors' hook, applied to every error."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=lambda _: True)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        context = self.execution_context.context
        request_id = getattr(context, "request_id", "-")
        return to_client_error(error, request_id)
