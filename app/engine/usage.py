"""What a buyer has used, per period, kept as counters on its provider row (for provider-wide caps)
and on each subscription row (for that subscription's caps). The engine's write statement counts
an assignment in the rows it already updates (the provider's debit, the subscription's place in
its queue), so counting costs no extra row write; caps are then checked without reading any
history. A counter holds the period it counts (`usage_<period>_start`, as lw_period_start() gives
it in the provider's time zone); one that last counted an older period has used nothing of the
current one. These build the SQL; the columns are in app/models/usage.py."""

from __future__ import annotations

from app.models.caps import CapPeriod

LOCAL_PERIODS = (CapPeriod.DAY, CapPeriod.WEEK, CapPeriod.MONTH)  # TOTAL has no start


def _col(period: CapPeriod, what: str) -> str:
    return f"usage_{period.value.lower()}_{what}"


def count_assignment(row: str, *, at: str, timezone: str, price: str, only_if: str | None = None) -> str:
    """SET assignments counting one more assignment at `at` (SQL) of `price` in `row`'s counters;
    with `only_if`, rows for which it is false keep theirs."""
    values: list[tuple[str, str]] = []
    for period in LOCAL_PERIODS:
        start = f"lw_period_start('{period.value}', {at}, {timezone})"
        same = f"{row}.{_col(period, 'start')} = {start}"
        leads, spend = f"{row}.{_col(period, 'leads')}", f"{row}.{_col(period, 'spend_cents')}"
        values += [
            (_col(period, "leads"), f"CASE WHEN {same} THEN {leads} + 1 ELSE 1 END"),
            (_col(period, "spend_cents"), f"CASE WHEN {same} THEN {spend} ELSE 0 END + {price}"),
            (_col(period, "start"), start),
        ]
    values += [
        ("usage_total_leads", f"{row}.usage_total_leads + 1"),
        ("usage_total_spend_cents", f"{row}.usage_total_spend_cents + {price}"),
    ]
    if only_if is not None:
        values = [
            (column, f"CASE WHEN {only_if} THEN {value} ELSE {row}.{column} END") for column, value in values
        ]
    return ",\n    ".join(f"{column} = {value}" for column, value in values)


def current(columns: str, period: str, what: str, *, timezone: str, at: str = "now()") -> str:
    """SQL: the leads or spend_cents (`what`) counted in the current period, for a period given as
    SQL (e.g. a cap's `cp.period`), from the counters named `{columns}usage_…` (e.g. "s." or "c.s_")."""
    cases = " ".join(
        f"WHEN '{p.value}' THEN CASE WHEN {columns}{_col(p, 'start')}"
        f" = lw_period_start('{p.value}', {at}, {timezone}) THEN {columns}{_col(p, what)} ELSE 0 END"
        for p in LOCAL_PERIODS
    )
    return f"CASE {period} {cases} ELSE {columns}usage_total_{what} END"


def counter_columns(row: str, prefix: str) -> str:
    """Every counter column of `row`, renamed with `prefix` (to pass them through a subquery)."""
    columns = [_col(p, w) for p in LOCAL_PERIODS for w in ("start", "leads", "spend_cents")]
    columns += ["usage_total_leads", "usage_total_spend_cents"]
    return ", ".join(f"{row}.{c} AS {prefix}{c}" for c in columns)
