"""Small input checks shared by services: each raises InvalidInput naming the field."""

from __future__ import annotations

import re
import uuid

from app.errors import InvalidInput

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def text(value: str, *, field: str, max_length: int = 200) -> str:
    cleaned = value.strip() if isinstance(value, str) else ""
    if not cleaned:
        raise InvalidInput(f"{field} must not be empty", field=field)
    no_nul(cleaned, field=field)
    if len(cleaned) > max_length:
        raise InvalidInput(f"{field} is longer than {max_length} characters", field=field)
    return cleaned


def email(value: str, *, field: str = "email") -> str:
    cleaned = text(value, field=field, max_length=320).lower()
    if not EMAIL.match(cleaned):
        raise InvalidInput(f"{field} is not an email address", field=field)
    return cleaned


def bounded_int(value: int, *, field: str, minimum: int, maximum: int = 2**62) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidInput(f"{field} must be an integer between {minimum} and {maximum}", field=field)
    return value


def require_uuid(value: object, *, field: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidInput(f"{field} is not a valid id", field=field) from None


def no_nul(value: object, *, field: str) -> None:
    """PostgreSQL stores no NUL character in text or jsonb: refuse it here, with the field's name."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInput(f"{field} must not contain NUL characters", field=field)
    elif isinstance(value, dict):
        for key, item in value.items():
            no_nul(key, field=field)
            no_nul(item, field=field)
    elif isinstance(value, list):
        for item in value:
            no_nul(item, field=field)
