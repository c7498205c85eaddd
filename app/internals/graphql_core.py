"""graphql-core internals, for app/resolvers/executor.py (the per-event executor of subscriptions).

- `Executor.build_per_event_executor(payload)` and `execute_operation(serially)` are overridden: each
  event gets its own sub-field cache, and a result another subscriber's execution produced is
  handed back by a stand-in that has `execute_operation` alone (graphql-core's subscription mapping
  calls nothing else on a per-event executor).
- `Executor._relevant_sub_fields` is the sub-field cache a per-event copy shares with the
  subscription's executor, keyed on id()s of lists made per event: 3.3 kept every event alive for
  the subscription's life. The override replaces it on each copy.
- The override reads `operation`, `root_value`, `variable_values.coerced` and `is_awaitable`."""

from __future__ import annotations

from typing import Any

from graphql import Executor, GraphQLSchema, build_schema, parse

from app.internals.checks import Library, Use, takes

DISTRIBUTION = "graphql-core"
WRITTEN_AGAINST = "3.3.2"
EXECUTOR = "app/resolvers/executor.py"

_PROBE_SCHEMA: GraphQLSchema | None = None


def _probe() -> Any:
    """A real executor of a one-field subscription: the instance attributes exist only on one."""
    global _PROBE_SCHEMA
    if _PROBE_SCHEMA is None:
        _PROBE_SCHEMA = build_schema("type Query { a: Int } type Subscription { a: Int }")
    built = Executor.build(_PROBE_SCHEMA, parse("subscription($v: Int) { a }"), raw_variable_values={"v": 1})
    if isinstance(built, list):
        raise RuntimeError(f"Executor.build refused a valid operation: {built}")
    return built


def _sub_field_cache() -> str | None:
    executor = _probe()
    cache = getattr(executor, "_relevant_sub_fields", None)
    if not isinstance(cache, dict):
        return "Executor.build made an executor without the dict _relevant_sub_fields"
    return None


def _read_attributes() -> str | None:
    executor = _probe()
    missing = [
        name
        for name in ("operation", "root_value", "variable_values", "is_awaitable")
        if not hasattr(executor, name)
    ]
    if not missing and not isinstance(getattr(executor.variable_values, "coerced", None), dict):
        missing.append("variable_values.coerced")
    return f"an executor has no {', '.join(missing)}" if missing else None


def _per_event_copy() -> str | None:
    executor = _probe()
    event = executor.build_per_event_executor({"a": 1})
    if event.root_value != {"a": 1} or not hasattr(event, "execute_operation"):
        return "build_per_event_executor(payload) no longer returns an executor of that payload"
    return None


LIBRARY = Library(
    DISTRIBUTION,
    WRITTEN_AGAINST,
    "app/internals/graphql_core.py",
    (
        Use(
            "graphql.Executor.build_per_event_executor(self, payload)",
            EXECUTOR,
            takes(Executor, "build_per_event_executor", ("self", "payload")),
        ),
        Use("graphql.Executor.build_per_event_executor: a copy on the payload", EXECUTOR, _per_event_copy),
        Use(
            "graphql.Executor.execute_operation(self, serially)",
            EXECUTOR,
            takes(Executor, "execute_operation", ("self", "serially")),
        ),
        Use("graphql.Executor._relevant_sub_fields", EXECUTOR, _sub_field_cache),
        Use(
            "graphql.Executor: operation, root_value, variable_values.coerced, is_awaitable",
            EXECUTOR,
            _read_attributes,
        ),
    ),
)
