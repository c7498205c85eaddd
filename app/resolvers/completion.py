"""Direct subtrees: a selection made only of direct fields is completed by a plan built once per
request, not by graphql-core's general machinery.

graphql-core spends ~15 µs of CPU on each field (a resolve info, a path, the is-awaitable checks,
the non-null / list / leaf / object dispatch, the sub-field collection per object): a nested page
of 100 leads with their assignments' providers and levels is ~3,800 fields, most of its CPU. But
most of those fields are direct (app/resolvers/direct.py: a plain attribute, or a `(self, info)`
relation answered at once from a prefetched loader) and of concrete object, list and leaf types.
For a field whose whole sub-selection is like that, the executor builds a plan (per request and
field group, from the sub-fields graphql-core collected) and completes each value with it: the
resolver, then the type's own coercion, nested objects as dicts in selection order, exactly what
graphql-core would have produced.

Anything the plan does not handle makes it give up on that field and hand it to graphql-core from
the start, which then does what it always did (reports the error at its path, awaits, nulls): a
resolver that raised or returned an awaitable (a relation not prefetched), a null in a non-null
position, a value a scalar refused. Direct resolvers only read (direct.py), so calling one again
then is harmless; a field group that gave up once is not planned again in the request. Fields with
arguments or directives, abstract types, types with `is_type_of`, deferred fragments and
middleware always take graphql-core's path.

The graphql-core internals used here are listed and checked in app/internals/graphql_core.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import (
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    is_leaf_type,
)
from graphql.pyutils import Undefined

from app.internals.strawberry_graphql import StrawberryGraphQLCoreExecutionContext
from app.resolvers.direct import DIRECT_ATTRIBUTE, is_direct

Complete = Callable[[Any], Any]


class _GiveUp(Exception):  # noqa: N818  (control flow, not an error)
    """Raised inside a plan: graphql-core completes the field instead. A new one each time: one
    shared instance would keep every traceback it was raised through, and their requests with it."""


class DirectCompletion(StrawberryGraphQLCoreExecutionContext):
    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Any,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        manager = self.middleware_manager
        if position_context is not None or (manager is not None and manager.middlewares):
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        done: dict[str, Any] = {}
        for response_name, field_group in grouped_field_set.items():
            plan = self._field_plan(parent_type, field_group)
            if plan is None:
                continue
            try:
                done[response_name] = plan(source_value)
            except Exception:  # noqa: BLE001  (_GiveUp, or a resolver's error: graphql-core reports it)
                self._plans()[id(field_group)] = (field_group, None)
        if len(done) == len(grouped_field_set):
            return done
        rest = {name: group for name, group in grouped_field_set.items() if name not in done}
        executed = super().execute_fields(parent_type, source_value, path, rest, position_context)
        if not done:
            return executed
        if self.is_awaitable(executed):

            async def merged() -> dict[str, Any]:
                return _in_order(grouped_field_set, done, await executed)

            return merged()
        return _in_order(grouped_field_set, done, executed)  # type: ignore[arg-type]

    # --- plans ------------------------------------------------------------------------------

    def _plans(self) -> dict[int, tuple[Any, Complete | None]]:
        """Per executor (so per request, and per subscription event: reset_plans). Keyed on the
        id() of graphql-core's field group, kept alive beside its plan so the id is not reused."""
        try:
            return self.__dict__["_direct_plans"]  # type: ignore[no-any-return]
        except KeyError:
            plans: dict[int, tuple[Any, Complete | None]] = {}
            self.__dict__["_direct_plans"] = plans
            return plans

    def reset_plans(self) -> None:
        self.__dict__["_direct_plans"] = {}

    def _field_plan(self, parent_type: GraphQLObjectType, field_group: Any) -> Complete | None:
        plans = self._plans()
        found = plans.get(id(field_group))
        if found is not None:
            return found[1]
        plan = self._build_field_plan(parent_type, field_group)
        plans[id(field_group)] = (field_group, plan)
        return plan

    def _build_field_plan(self, parent_type: GraphQLObjectType, field_group: Any) -> Complete | None:
        for details in field_group:
            node = details.node
            if node.arguments or node.directives or details.fragment_variable_values is not None:
                return None
        node = field_group[0].node
        name = node.name.value
        if name == "__typename":
            type_name = parent_type.name
            return lambda _source: type_name
        field_def = self.schema.get_field(parent_type, name)
        if field_def is None or not is_direct(field_def.resolve):
            return None
        complete = self._type_plan(field_def.type, field_group)
        if complete is None:
            return None
        read = getattr(field_def.resolve, DIRECT_ATTRIBUTE, None)
        is_awaitable = self.is_awaitable
        if read is not None:  # a plain attribute

            def attribute(source: Any) -> Any:
                value = read(source)
                if is_awaitable(value):
                    raise _GiveUp
                return complete(value)

            return attribute
        resolve = field_def.resolve
        # direct resolvers read only info.context (direct.py): one info serves every item
        info = self.build_resolve_info(field_def, [d.node for d in field_group], parent_type, None)  # type: ignore[arg-type]

        def resolved(source: Any) -> Any:
            value = resolve(source, info)  # type: ignore[misc]
            if is_awaitable(value):
                close = getattr(value, "close", None)
                if close is not None:
                    close()  # an unawaited coroutine; the loader's batch goes on regardless
                raise _GiveUp
            return complete(value)

        return resolved

    def _type_plan(self, return_type: GraphQLOutputType, field_group: Any) -> Complete | None:
        if isinstance(return_type, GraphQLNonNull):
            inner = self._type_plan(return_type.of_type, field_group)
            if inner is None:
                return None

            def non_null(value: Any) -> Any:
                completed = inner(value)
                if completed is None:
                    raise _GiveUp
                return completed

            return non_null
        if isinstance(return_type, GraphQLList):
            item = self._type_plan(return_type.of_type, field_group)
            if item is None:
                return None
            is_awaitable = self.is_awaitable

            def listed(value: Any) -> Any:
                if value is None or value is Undefined:
                    return None
                if type(value) is not list:
                    raise _GiveUp
                completed = []
                for element in value:
                    if is_awaitable(element):
                        raise _GiveUp
                    completed.append(item(element))
                return completed

            return listed
        if is_leaf_type(return_type):
            coerce = return_type.coerce_output_value

            def leaf(value: Any) -> Any:
                if value is None or value is Undefined:
                    return None
                if isinstance(value, Exception):
                    raise _GiveUp
                coerced = coerce(value)
                if coerced is None or coerced is Undefined:
                    raise _GiveUp
                return coerced

            return leaf
        if not isinstance(return_type, GraphQLObjectType) or return_type.is_type_of is not None:
            return None
        grouped, new_defer_usages, forbidden = self.collect_subfields(return_type, field_group)
        if new_defer_usages or forbidden:
            return None
        fields: list[tuple[str, Complete]] = []
        for response_name, sub_group in grouped.items():
            plan = self._field_plan(return_type, sub_group)
            if plan is None:
                return None
            fields.append((response_name, plan))

        def obj(value: Any) -> Any:
            if value is None or value is Undefined:
                return None
            if isinstance(value, Exception):
                raise _GiveUp
            return {response_name: plan(value) for response_name, plan in fields}

        return obj


def _in_order(grouped_field_set: Any, done: dict[str, Any], executed: dict[str, Any]) -> dict[str, Any]:
    """The fields in selection order, as graphql-core would have answered them."""
    results: dict[str, Any] = {}
    for name in grouped_field_set:
        if name in done:
            results[name] = done[name]
        elif name in executed:
            results[name] = executed[name]
    return results
