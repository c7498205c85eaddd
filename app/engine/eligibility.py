"""The filter language of SPEC §3: validated when written, evaluated fail-safe at distribution."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from app.errors import InvalidInput

MAX_CONDITIONS = 50
MAX_IN_VALUES = 1000
MAX_FIELD_LENGTH = 100

Scalar = str | int | float | bool


class Op(StrEnum):
    EQ = "eq"
    NEQ = "neq"
    IN = "in"
    NOT_IN = "not_in"
    PREFIX = "prefix"
    GTE = "gte"
    LTE = "lte"
    EXISTS = "exists"


class Verdict(StrEnum):
    ELIGIBLE = "ELIGIBLE"
    INELIGIBLE = "INELIGIBLE"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    op: Op
    value: Any

    def as_json(self) -> dict[str, Any]:
        return {"field": self.field, "op": self.op.value, "value": self.value}


@dataclass(frozen=True, slots=True)
class Evaluation:
    verdict: Verdict
    detail: str = ""


ELIGIBLE = Evaluation(Verdict.ELIGIBLE)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | bool) or _is_number(value)


def _same_kind(a: object, b: object) -> bool:
    """Strings compare with strings, numbers with numbers, booleans with booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if _is_number(a):
        return _is_number(b)
    return isinstance(a, str) and isinstance(b, str)


def validate_filters(raw: object) -> list[Condition]:
    """Raises InvalidInput naming the offending condition; returns the normalised conditions."""
    if not isinstance(raw, list):
        raise InvalidInput("filters must be a list of conditions", field="filters")
    if "\\u0000" in json.dumps(raw):
        raise InvalidInput("filters must not contain NUL characters", field="filters")
    if len(raw) > MAX_CONDITIONS:
        raise InvalidInput(f"at most {MAX_CONDITIONS} filter conditions", field="filters")
    return [_validate_condition(i, item) for i, item in enumerate(raw)]


def _validate_condition(index: int, item: object) -> Condition:
    where = f"filters[{index}]"
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{where} must be an object with field, op and value", field=where)
    unknown = set(item) - {"field", "op", "value"}
    if unknown:
        raise InvalidInput(f"{where} has unknown keys: {sorted(unknown)}", field=where)
    field = item.get("field")
    if not isinstance(field, str) or not field.strip() or len(field) > MAX_FIELD_LENGTH:
        raise InvalidInput(f"{where}.field must be a non-empty attribute name", field=f"{where}.field")
    try:
        op = Op(str(item.get("op")))
    except ValueError:
        ops = ", ".join(o.value for o in Op)
        raise InvalidInput(f"{where}.op must be one of {ops}", field=f"{where}.op") from None
    value = item.get("value")
    bad = f"{where}.value"
    if op is Op.EXISTS:
        if value is None:
            value = True
        if not isinstance(value, bool):
            raise InvalidInput(f"{bad} must be true or false for exists", field=bad)
    elif op in (Op.EQ, Op.NEQ):
        if not _is_scalar(value):
            raise InvalidInput(f"{bad} must be a string, number or boolean for {op}", field=bad)
    elif op in (Op.IN, Op.NOT_IN):
        if (
            not isinstance(value, list)
            or not value
            or len(value) > MAX_IN_VALUES
            or not all(_is_scalar(v) for v in value)
        ):
            raise InvalidInput(
                f"{bad} must be a non-empty list (at most {MAX_IN_VALUES}) of scalars for {op}",
                field=bad,
            )
    elif op is Op.PREFIX:
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"{bad} must be a non-empty string for prefix", field=bad)
    elif not _is_number(value):  # gte, lte
        raise InvalidInput(f"{bad} must be a number for {op}", field=bad)
    return Condition(field=field, op=op, value=value)


def parse_stored(raw: Sequence[Mapping[str, Any]]) -> list[Condition]:
    """Filters read back from the database were validated on write: no re-validation cost."""
    return [Condition(field=c["field"], op=Op(c["op"]), value=c.get("value")) for c in raw]


def evaluate(conditions: Sequence[Condition], attributes: Mapping[str, Any]) -> Evaluation:
    """All conditions must hold. A condition that cannot be evaluated is an ERROR, never a crash."""
    for cond in conditions:
        result = _evaluate_one(cond, attributes)
        if result.verdict is not Verdict.ELIGIBLE:
            return result
    return ELIGIBLE


def _evaluate_one(cond: Condition, attributes: Mapping[str, Any]) -> Evaluation:
    present = cond.field in attributes and attributes[cond.field] is not None
    if cond.op is Op.EXISTS:
        if present == bool(cond.value):
            return ELIGIBLE
        state = "missing" if cond.value else "present"
        return Evaluation(Verdict.INELIGIBLE, f"{cond.field} is {state}")
    if not present:
        return Evaluation(Verdict.ERROR, f"{cond.field} is missing for {cond.op}")
    actual = attributes[cond.field]
    op = cond.op
    if op in (Op.EQ, Op.NEQ):
        if not _same_kind(actual, cond.value):
            return Evaluation(Verdict.ERROR, f"{cond.field}: cannot compare {actual!r} with {op}")
        holds = (actual == cond.value) == (op is Op.EQ)
    elif op in (Op.IN, Op.NOT_IN):
        comparable = [v for v in cond.value if _same_kind(actual, v)]
        if not comparable:
            return Evaluation(Verdict.ERROR, f"{cond.field}: cannot compare {actual!r} with {op}")
        holds = (actual in comparable) == (op is Op.IN)
    elif op is Op.PREFIX:
        if not isinstance(actual, str):
            return Evaluation(Verdict.ERROR, f"{cond.field}: prefix needs a string, got {actual!r}")
        holds = actual.startswith(cond.value)
    else:  # gte, lte
        if not _is_number(actual):
            return Evaluation(Verdict.ERROR, f"{cond.field}: {op} needs a number, got {actual!r}")
        holds = actual >= cond.value if op is Op.GTE else actual <= cond.value
    if holds:
        return ELIGIBLE
    return Evaluation(Verdict.INELIGIBLE, f"{cond.field} {op} {cond.value!r} does not hold")
