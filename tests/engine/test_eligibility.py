"""The filter language (SPEC §3): every op, validation at write time, fail-safe evaluation."""

import pytest

from app.engine.eligibility import Verdict, evaluate, validate_filters
from app.errors import InvalidInput

LEAD = {"state": "TX", "zip": "75001", "score": 72, "vip": True, "note": None}


@pytest.mark.parametrize(
    ("condition", "verdict"),
    [
        ({"field": "state", "op": "eq", "value": "TX"}, Verdict.ELIGIBLE),
        ({"field": "state", "op": "eq", "value": "OK"}, Verdict.INELIGIBLE),
        ({"field": "state", "op": "neq", "value": "OK"}, Verdict.ELIGIBLE),
        ({"field": "state", "op": "neq", "value": "TX"}, Verdict.INELIGIBLE),
        ({"field": "state", "op": "in", "value": ["TX", "OK"]}, Verdict.ELIGIBLE),
        ({"field": "state", "op": "in", "value": ["CA"]}, Verdict.INELIGIBLE),
        ({"field": "state", "op": "not_in", "value": ["CA", "NY"]}, Verdict.ELIGIBLE),
        ({"field": "state", "op": "not_in", "value": ["TX"]}, Verdict.INELIGIBLE),
        ({"field": "zip", "op": "prefix", "value": "750"}, Verdict.ELIGIBLE),
        ({"field": "zip", "op": "prefix", "value": "751"}, Verdict.INELIGIBLE),
        ({"field": "score", "op": "gte", "value": 72}, Verdict.ELIGIBLE),
        ({"field": "score", "op": "gte", "value": 73}, Verdict.INELIGIBLE),
        ({"field": "score", "op": "lte", "value": 72.5}, Verdict.ELIGIBLE),
        ({"field": "score", "op": "lte", "value": 71}, Verdict.INELIGIBLE),
        ({"field": "vip", "op": "eq", "value": True}, Verdict.ELIGIBLE),
        ({"field": "state", "op": "exists"}, Verdict.ELIGIBLE),
        ({"field": "email", "op": "exists", "value": True}, Verdict.INELIGIBLE),
        ({"field": "email", "op": "exists", "value": False}, Verdict.ELIGIBLE),
        ({"field": "note", "op": "exists"}, Verdict.INELIGIBLE),  # null counts as absent
        # cannot be evaluated: ELIGIBILITY_ERROR, never a crash
        ({"field": "missing", "op": "eq", "value": "x"}, Verdict.ERROR),
        ({"field": "missing", "op": "gte", "value": 1}, Verdict.ERROR),
        ({"field": "state", "op": "gte", "value": 1}, Verdict.ERROR),
        ({"field": "score", "op": "prefix", "value": "7"}, Verdict.ERROR),
        ({"field": "score", "op": "eq", "value": "72"}, Verdict.ERROR),
        ({"field": "vip", "op": "eq", "value": 1}, Verdict.ERROR),
        ({"field": "score", "op": "in", "value": ["72"]}, Verdict.ERROR),
    ],
)
def test_each_op(condition: dict[str, object], verdict: Verdict) -> None:
    assert evaluate(validate_filters([condition]), LEAD).verdict is verdict


def test_all_conditions_must_hold() -> None:
    both = [
        {"field": "state", "op": "in", "value": ["TX", "OK"]},
        {"field": "zip", "op": "prefix", "value": "8"},
    ]
    result = evaluate(validate_filters(both), LEAD)
    assert result.verdict is Verdict.INELIGIBLE
    assert "zip" in result.detail
    assert evaluate(validate_filters([]), LEAD).verdict is Verdict.ELIGIBLE


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ("state=TX", "filters"),
        ([1], "filters[0]"),
        ([{"field": "", "op": "eq", "value": "x"}], "filters[0].field"),
        ([{"field": "state", "op": "like", "value": "x"}], "filters[0].op"),
        ([{"field": "state", "op": "eq"}], "filters[0].value"),
        ([{"field": "state", "op": "eq", "value": ["TX"]}], "filters[0].value"),
        ([{"field": "state", "op": "in", "value": []}], "filters[0].value"),
        ([{"field": "state", "op": "in", "value": "TX"}], "filters[0].value"),
        ([{"field": "state", "op": "in", "value": [{"a": 1}]}], "filters[0].value"),
        ([{"field": "zip", "op": "prefix", "value": 75}], "filters[0].value"),
        ([{"field": "score", "op": "gte", "value": "10"}], "filters[0].value"),
        ([{"field": "score", "op": "lte", "value": True}], "filters[0].value"),
        ([{"field": "x", "op": "exists", "value": "yes"}], "filters[0].value"),
        ([{"field": "x", "op": "eq", "value": 1, "extra": 2}], "filters[0]"),
        ([{"field": "x", "op": "eq", "value": 1}] * 51, "filters"),
    ],
)
def test_bad_filters_are_rejected_with_the_field(filters: object, field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        validate_filters(filters)
    assert error.value.field == field
    assert error.value.code.value == "INVALID_INPUT"
