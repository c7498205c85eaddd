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


# A counter counts toward the current period when it counts that period or a later one: a later one
# when assignments made after a period boundary committed while this transaction, which took its
# `now()` before the boundary, waited for a lock. Those count: its own write will land after them.
def _counts_now(columns: str, period: CapPeriod, start: str) -> str:
    return f"{columns}{_col(period, 'start')} >= {start}"


def current(columns: str, period: str, what: str, *, timezone: str, at: str = "now()") -> str:
    """SQL: the leads or spend_cents (`what`) counted in the current period, for a period given as
    SQL (e.g. a cap's `cp.period`), from the counters named `{columns}usage_…` (e.g. "s." or "c.s_")."""

    def counted(p: CapPeriod) -> str:
        start = f"lw_period_start('{p.value}', {at}, {timezone})"
        return f"CASE WHEN {_counts_now(columns, p, start)} THEN {columns}{_col(p, what)} ELSE 0 END"

    cases = " ".join(f"WHEN '{p.value}' THEN {counted(p)}" for p in LOCAL_PERIODS)
    return f"CASE {period} {cases} ELSE {columns}usage_total_{what} END"


# What the engine reads of a candidate with caps: per period (USAGE_ORDER), the subscription's leads
# and spend, then the provider's, as one text (`usage_text`); `used` reads it back.
USAGE_ORDER = (*LOCAL_PERIODS, CapPeriod.TOTAL)


def usage_text(sub: str, provider: str, starts: str) -> str:
    """SQL: the current usage of a candidate's subscription (counters `{sub}usage_…`) and provider
    (`{provider}usage_…`), given the current periods' starts (`{starts}.day` …, `period_starts`)."""
    values = []
    for period in LOCAL_PERIODS:
        for row in (sub, provider):
            for what in ("leads", "spend_cents"):
                counts = _counts_now(row, period, f"{starts}.{period.value.lower()}")
                values.append(f"CASE WHEN {counts} THEN {row}{_col(period, what)} ELSE 0 END")
    for row in (sub, provider):
        values += [f"{row}usage_total_leads", f"{row}usage_total_spend_cents"]
    return f"concat_ws(',', {', '.join(values)})"


def period_starts(timezone: str, only_if: str) -> str:
    """SQL: a LATERAL `cur` of the current local periods' starts, computed only where `only_if`."""
    starts = ", ".join(
        f"lw_period_start('{p.value}', now(), {timezone}) AS {p.value.lower()}" for p in LOCAL_PERIODS
    )
    return f"LATERAL (SELECT {starts} WHERE {only_if}) cur"


def used(usage: list[int], period: str, *, provider_wide: bool) -> tuple[int, int]:
    """The leads and spend a period has used, read back from `usage_text`'s numbers."""
    at = 4 * USAGE_ORDER.index(CapPeriod(period)) + (2 if provider_wide else 0)
    return usage[at], usage[at + 1]


def counter_columns(row: str, prefix: str) -> str:
    """Every counter column of `row`, renamed with `prefix` (to pass them through a subquery)."""
    columns = [_col(p, w) for p in LOCAL_PERIODS for w in ("start", "leads", "spend_cents")]
    columns += ["usage_total_leads", "usage_total_spend_cents"]
    return ", ".join(f"{row}.{c} AS {prefix}{c}" for c in columns)
