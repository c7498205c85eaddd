"""graphql-core internals, for app/resolvers/executor.py (the per-event executor of subscriptions).

- `Executor.build_per_event_executor(payload)` and `execute_operation(serially)` are overridden: each
  event gets its own sub-field cache, and a result another subscriber's execution produced is
  handed back by a stand-in that has `execute_operation` alone (graphql-core's subscription mapping
  calls nothing else on a per-event executor).
- `Executor._relevant_sub_fields` is the sub-field cache a per-event copy shares with the
  subscription's executor, keyed on id()s of lists made per event: 3.3 kept every event alive for
  the subscription's life. The override replaces it on each copy.
- The override reads `operation`, `root_value`, `variable_values.coerced` and `is_awaitable`.

For app/resolvers/completion.py (direct subtrees completed by a plan):
- `Executor.execute_fields(self, parent_type, source_value, path, grouped_field_set,
  position_context)` is overridden; it calls the original with the fields left to it.
- `Executor.collect_subfields(return_type, field_details_list)` gives (grouped field set, new defer
  usages, forbidden directives); a field group's items have `.node` and
  `.fragment_variable_values`.
- It reads `schema`, `middleware_manager.middlewares`, `build_resolve_info` and `is_awaitable`."""

from __future__ import annotations

from typing import Any

from graphql import Executor, GraphQLSchema, build_schema, parse

from app.internals.checks import Library, Use, takes

DISTRIBUTION = "graphql-core"
WRITTEN_AGAINST = "3.3.2"
EXECUTOR = "app/resolvers/executor.py"
COMPLETION = "app/resolvers/completion.py"

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


def _collected_sub_fields() -> str | None:
    schema = build_schema("type Query { a: A } type A { b: Int }")
    built = Executor.build(schema, parse("{ a { b } }"))
    if isinstance(built, list):
        return f"Executor.build refused a valid operation: {built}"
    query = schema.query_type
    root = built.collect_subfields(query, [_FieldDetails(parse("{ a { b } }").definitions[0])])  # type: ignore[arg-type, list-item]
    try:
        grouped, new_defer_usages, forbidden = root
        group = grouped["a"]
        node, fragment_variables = group[0].node, group[0].fragment_variable_values
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        return f"collect_subfields no longer gives (grouped fields, defer usages, forbidden): {exc}"
    if node.name.value != "a" or fragment_variables is not None or new_defer_usages or forbidden:
        return "collect_subfields gave something else for `{ a { b } }`"
    return None


class _FieldDetails:
    """Stands for the root operation's field group: its node's selection set is the operation's."""

    fragment_variable_values = None
    defer_usage = None

    def __init__(self, operation: Any) -> None:
        self.node = operation


def _completion_attributes() -> str | None:
    executor = _probe()
    missing = [
        name
        for name in ("schema", "middleware_manager", "build_resolve_info", "is_awaitable")
        if not hasattr(executor, name)
    ]
    manager = getattr(executor, "middleware_manager", None)
    if manager is not None and not hasattr(manager, "middlewares"):
        missing.append("middleware_manager.middlewares")
    return f"an executor has no {', '.join(missing)}" if missing else None


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
        Use(
            "graphql.Executor.execute_fields(self, parent_type, source_value, path, grouped_field_set, "
            "position_context)",
            COMPLETION,
            takes(
                Executor,
                "execute_fields",
                ("self", "parent_type", "source_value", "path", "grouped_field_set", "position_context"),
            ),
        ),
        Use(
            "graphql.Executor.collect_subfields: (grouped fields, defer usages, forbidden)",
            COMPLETION,
            _collected_sub_fields,
        ),
        Use(
            "graphql.Executor: schema, middleware_manager.middlewares, build_resolve_info, is_awaitable",
            COMPLETION,
            _completion_attributes,
        ),
        Use(
            "graphql.Executor.build_resolve_info(self, field_def, field_nodes, parent_type, path)",
            COMPLETION,
            takes(
                Executor, "build_resolve_info", ("self", "field_def", "field_nodes", "parent_type", "path")
            ),
        ),
    ),
)
