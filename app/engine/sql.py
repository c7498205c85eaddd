"""Named parameters for the engine's raw asyncpg statements. asyncpg takes only `$1, $2 …`; a
statement of twenty parameters written that way cannot be read or changed safely. Statements are
written with `:name` placeholders and compiled once, at import, to the `$n` text asyncpg prepares:
the same SQL as before, so the same plans and the same speed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# `:name`, but not the `::type` of a cast
_PLACEHOLDER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)\b")


@dataclass(frozen=True)
class Statement:
    text: str  # with $n placeholders
    names: tuple[str, ...]  # the parameter of $1, $2, …

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional arguments, in $n order. Every name must be given, and nothing else."""
        given, wanted = set(values), set(self.names)
        if given != wanted:
            raise TypeError(f"statement parameters: missing {wanted - given}, unknown {given - wanted}")
        return [values[name] for name in self.names]


def compile_named(sql: str) -> Statement:
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return Statement(_PLACEHOLDER.sub(number, sql), tuple(names))
