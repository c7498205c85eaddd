"""Domain errors. Each carries one code of SPEC §5; the API maps them in one place."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    MFA_REQUIRED = "MFA_REQUIRED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    INVALID_INPUT = "INVALID_INPUT"
    CONFLICT = "CONFLICT"
    LEAD_NOT_DISTRIBUTABLE = "LEAD_NOT_DISTRIBUTABLE"
    RATE_LIMITED = "RATE_LIMITED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


class DomainError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidInput(DomainError):
    code = ErrorCode.INVALID_INPUT


class NotFound(DomainError):
    code = ErrorCode.NOT_FOUND

    def __init__(self, entity: str, entity_id: object) -> None:
        super().__init__(f"{entity} {entity_id} does not exist")
        self.entity = entity


class Conflict(DomainError):
    code = ErrorCode.CONFLICT


class LeadNotDistributable(DomainError):
    code = ErrorCode.LEAD_NOT_DISTRIBUTABLE


class Unauthenticated(DomainError):
    code = ErrorCode.UNAUTHENTICATED


class MfaRequired(DomainError):
    code = ErrorCode.MFA_REQUIRED


class Forbidden(DomainError):
    code = ErrorCode.FORBIDDEN


class RateLimited(DomainError):
    code = ErrorCode.RATE_LIMITED


class Unavailable(DomainError):
    """PostgreSQL or Redis cannot be reached for the moment (restarting, unreachable, refusing
    connections): not the client's fault nor a bug, and safe to retry. HTTP answers 503 with
    Retry-After."""

    code = ErrorCode.UNAVAILABLE
    # a restarting PostgreSQL or Redis is back within seconds; a client retrying sooner mostly
    # adds load to a server that is starting
    retry_after_seconds = 2
