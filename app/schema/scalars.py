"""Cents: money as an integer number of cents, 64-bit (GraphQL's Int stops at 2^31 - 1, about
$21 million, which a balance may pass)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NewType

import strawberry
from strawberry.scalars import JSON as StrawberryJSON
from strawberry.types.scalar import ScalarDefinition

MAX_CENTS = 2**53 - 1  # exact in every JSON client


def _parse(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_CENTS:
        raise ValueError(f"Cents must be an integer number of cents within ±{MAX_CENTS}, got {value!r}")
    return value


if TYPE_CHECKING:  # to type checkers these are what they carry
    Cents = int
    JSON = Any
else:
    Cents = NewType("Cents", int)
    JSON = StrawberryJSON

# registered on the schema through StrawberryConfig(scalar_map=SCALARS)
SCALARS: dict[object, ScalarDefinition] = {
    Cents: strawberry.scalar(
        name="Cents",
        description="Money in integer cents (64-bit; never a float).",
        serialize=int,
        parse_value=_parse,
    )
}
