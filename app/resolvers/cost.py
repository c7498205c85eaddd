"""The query cost limit: how many objects a document may ask for, estimated before it runs.

Depth, token and alias limits bound a document's size, not its fan-out: `leads(first: 100)` with
each lead's assignments, each with its lead's assignments, is short and shallow yet asks for
~10,000 objects. Buyers' own scripts reach the API, so the estimate refuses such a document with
INVALID_INPUT before any resolver runs.

The estimate counts objects (fields of an object, interface or union type; scalars are free):

- a field with a `first` argument that returns a list yields `first` objects per parent; one that
  returns a connection yields one, and the list inside it (`edges`) `first` per connection;
  `first` comes from the literal, else the variable's value, else the default of the variable or
  of the argument;
- any other list yields LIST_ESTIMATE per parent (a lead's assignments, a niche's levels);
- nested fields multiply: `leads(first: 100) { edges { node { assignments { provider } } } }` is
  1 + 100 + 100 + 100 × 10 + 100 × 10 = 2,201.

Introspection (`__schema`, `__type`) is not counted: it is bounded by the schema and off in
production. @skip / @include are ignored (the estimate assumes the worst).

Scripts and dashboards send the same few documents: the estimate is compiled once per (document
text, operation) into a small tree whose only request-dependent parts are the `first` variables; a
document with none of them is a constant. Per request the check is a dict lookup, and a walk of
that tree only when `first` comes from a variable."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    is_composite_type,
)
from strawberry.extensions import ValidationCache

from app.internals.strawberry_graphql import graphql_core_schema

LIST_ESTIMATE = 10  # objects assumed in a list that takes no `first`
PLANS_MAX = 512  # (document, operation) pairs kept; the oldest goes first


@dataclass(frozen=True, slots=True)
class PageSize:
    """`first: $variable`: its value at request time, else `fallback` (the declared default)."""

    variable: str
    fallback: int


Size = int | PageSize


@dataclass(frozen=True, slots=True)
class Node:
    size: Size  # objects per parent object
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class CostPlan:
    nodes: tuple[Node, ...]
    constant: int | None  # the cost when no `first` comes from a variable

    def cost(self, variables: Mapping[str, Any] | None) -> int:
        if self.constant is not None:
            return self.constant
        return _total(self.nodes, variables or {})


def _size(size: Size, variables: Mapping[str, Any]) -> int:
    if isinstance(size, int):
        return size
    value = variables.get(size.variable)
    if isinstance(value, int) and not isinstance(value, bool):
        return max(0, value)
    return size.fallback  # absent or null; a value of the wrong type fails coercion anyway


def _total(nodes: tuple[Node, ...], variables: Mapping[str, Any]) -> int:
    return sum(_size(n.size, variables) * (1 + _total(n.children, variables)) for n in nodes)


def _has_variables(nodes: tuple[Node, ...]) -> bool:
    return any(isinstance(n.size, PageSize) or _has_variables(n.children) for n in nodes)


class _Compiler:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode) -> None:
        self.schema = schema
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.defaults: dict[str, int] = {}

    def operation(self, operation: OperationDefinitionNode) -> tuple[Node, ...]:
        for definition in operation.variable_definitions or ():
            default = definition.default_value
            if isinstance(default, IntValueNode):
                self.defaults[definition.variable.name.value] = int(default.value)
        root = self.schema.get_root_type(operation.operation)
        return tuple(self._selections(operation.selection_set, root, page=None)) if root else ()

    def _selections(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType, page: Size | None
    ) -> Iterator[Node]:
        """`page`: set inside a connection, the page size its lists have."""
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                node = self._field(selection, parent, page)
                if node is not None:
                    yield node
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                yield from self._selections(selection.selection_set, target or parent, page)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None:  # validation refuses unknown fragments and cycles
                    target = self.schema.get_type(fragment.type_condition.name.value)
                    yield from self._selections(fragment.selection_set, target or parent, page)

    def _field(self, node: FieldNode, parent: GraphQLNamedType, page: Size | None) -> Node | None:
        name = node.name.value
        if name.startswith("__"):
            return None
        definition: GraphQLField | None = getattr(parent, "fields", {}).get(name)
        if definition is None:
            return None
        returned, is_list = _unwrap(definition.type)
        if not is_composite_type(returned) or node.selection_set is None:
            return None
        first = self._first(node, definition)
        if first is not None and not is_list:  # a connection: the lists inside it are the page
            return Node(1, tuple(self._selections(node.selection_set, returned, page=first)))
        if first is not None:
            size: Size = first
        elif is_list:
            size = page if page is not None else LIST_ESTIMATE
        else:
            size = 1
        return Node(size, tuple(self._selections(node.selection_set, returned, page=None)))

    def _first(self, node: FieldNode, definition: GraphQLField) -> Size | None:
        declared = definition.args.get("first")
        if declared is None:
            return None
        default = declared.default_value  # Undefined when the argument has none
        fallback = default if isinstance(default, int) else LIST_ESTIMATE
        for argument in node.arguments or ():
            if argument.name.value != "first":
                continue
            if isinstance(argument.value, IntValueNode):
                return max(0, int(argument.value.value))
            if isinstance(argument.value, VariableNode):
                variable = argument.value.name.value
                return PageSize(variable, self.defaults.get(variable, fallback))
            return fallback  # null or a wrong literal: validation or the resolver refuses it
        return fallback


def _unwrap(type_: GraphQLOutputType) -> tuple[GraphQLNamedType, bool]:
    is_list = False
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        is_list = is_list or isinstance(type_, GraphQLList)
        type_ = type_.of_type
    return type_, is_list


def compile_cost(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None) -> CostPlan:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name is not None and o.name.value == operation_name]
    if len(operations) != 1:
        return CostPlan((), 0)  # no operation to run: execution reports it
    nodes = _Compiler(schema, document).operation(operations[0])
    return CostPlan(nodes, None if _has_variables(nodes) else _total(nodes, {}))


_plans: dict[tuple[int, str, str | None], CostPlan] = {}


def cached_plan(
    schema: GraphQLSchema, query: str | None, document: DocumentNode, operation_name: str | None
) -> CostPlan:
    if query is None:
        return compile_cost(schema, document, operation_name)
    # every schema here is built from the same types; id() keeps any other one apart
    key = (id(schema), query, operation_name)
    plan = _plans.get(key)
    if plan is None:
        plan = compile_cost(schema, document, operation_name)
        if len(_plans) >= PLANS_MAX:
            del _plans[next(iter(_plans))]
        _plans[key] = plan
    return plan


class ValidationWithCostLimit(ValidationCache):
    """Strawberry's ValidationCache (each distinct document validated once), then the cost check
    of a valid document: over `max_cost` it leaves as a validation error and nothing executes.
    One extension, not two: the check cannot be ordered before the validation that would
    overwrite its error, and a request pays for one hook."""

    def __init__(self, *, max_cost: int, maxsize: int) -> None:
        super().__init__(maxsize=maxsize)
        self.max_cost = max_cost

    def on_validate(self) -> Iterator[None]:
        validation = super().on_validate()
        next(validation)  # sets pre_execution_errors: [] for a valid document
        context = self.execution_context
        if not context.pre_execution_errors and context.graphql_document is not None:
            schema = graphql_core_schema(context.schema)
            plan = cached_plan(schema, context.query, context.graphql_document, context.operation_name)
            cost = plan.cost(context.variables)
            if cost > self.max_cost:
                context.pre_execution_errors = [
                    GraphQLError(
                        f"query cost {cost:,} is over the limit of {self.max_cost:,} objects: ask for "
                        "fewer (smaller `first`, fewer nested lists) or split the query"
                    )
                ]
        yield
        next(validation, None)
