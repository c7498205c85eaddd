"""Buyer caps (SPEC §8): limits on leads and/or spend per period, on one subscription (its `caps`)
or on the provider across all its subscriptions (the provider's `caps`), as a JSON object:

    {"DAY": {"leads": 10}, "MONTH": {"leads": 150, "spend": 500000}}

One cap per period by construction (object keys), and the database refuses anything else (CHECK
below). What counts toward them is kept by the engine as usage counters on the same rows
(app/models/usage.py). A period is what lw_period_start() (migration 0005) says: the one
definition the engine, the services and the invariants all use."""

from __future__ import annotations

from enum import StrEnum

import sqlalchemy as sa


class CapPeriod(StrEnum):
    DAY = "DAY"
    WEEK = "WEEK"  # ISO: from Monday
    MONTH = "MONTH"
    TOTAL = "TOTAL"


CAP_LIMITS = ("leads", "spend")  # leads, and spend in cents


def caps_valid() -> sa.CheckConstraint:
    """`caps` is NULL or an object of periods, each an object of non-negative integer limits (at
    least one)."""
    periods = " || ".join(f'@.key == "{p.value}"' for p in CapPeriod)
    limits = " || ".join(f'@.key == "{name}"' for name in CAP_LIMITS)
    return sa.CheckConstraint(
        "caps IS NULL OR (jsonb_typeof(caps) = 'object' AND caps <> '{}'::jsonb"
        f" AND NOT jsonb_path_exists(caps, '$.keyvalue() ? (!({periods}))')"
        " AND NOT jsonb_path_exists(caps, '$.* ? (@.type() != \"object\")')"
        " AND NOT jsonb_path_exists(caps, '$.* ? (!exists(@.leads) && !exists(@.spend))')"
        " AND NOT jsonb_path_exists(caps, '$.*.* ? (@.type() != \"number\" || @ < 0 || @ != @.floor())')"
        f" AND NOT jsonb_path_exists(caps, '$.*.keyvalue() ? (!({limits}))'))",
        name="caps_valid",
    )
