"""The query cost limit: how many objects a document may ask for, estimated before it runs.

Depth, token and alias limits bound a document's size, not its fan-out: `leads(first: 100)` with
each lead's assignments, each with its lead's assignments, is short and shallow yet asks for
~10,000 objects. Buyers' own scripts reach the API, so the estimate refuses such a document with
INVALID_INPUT before any resolver runs.

The estimate counts objects (fields of an object, interface or union type; scalars are free):

- a field with a page size argument (`first`, or the Int argument its resolver declares with
  `page_size`: `myAssignments(recent:)`, `webhookOverview(failures:)`) that returns a list yields
  that many objects per parent; one that returns an object yields one, and the list inside it that
  the argument bounds (a connection's `edges`; the one `page_size` names) that many per object;
  the size comes from the literal, else the variable's value, else the default of the variable or
  of the argument;
- any other list yields LIST_ESTIMATE per parent (a lead's assignments, a niche's levels): a list
  field whose size an Int argument sets must declare it (tests/api/test_query_cost.py checks every
  field of the schema);
- nested fields multiply: `leads(first: 100) { edges { node { assignments { provider } } } }` is
  1 + 100 + 100 + 100 × 10 + 100 × 10 = 2,201.

Introspection (`__schema`, `__type`) is not counted: it is bounded by the schema and off in
production. @skip / @include are ignored (the estimate assumes the worst).

Scripts and dashboards send the same few documents: the estimate is compiled once per (document
text, operation) into a small tree whose only request-dependent parts are the page size variables;
a document with none of them is a constant. Per request the check is a dict lookup, and a walk of
that tree only when a page size comes from a variable."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

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
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    is_composite_type,
)
from strawberry import Schema
from strawberry.extensions import ValidationCache
from strawberry.types.field import StrawberryField

from app.internals.strawberry_graphql import DEFINITION_BACKREF, graphql_core_schema

LIST_ESTIMATE = 10  # objects assumed in a list without a page size argument
PLANS_MAX = 512  # (document, operation) pairs kept; the oldest goes first
FIRST = "first"  # the page size of every field that declares it, without a declaration

F = TypeVar("F", bound=Callable[..., Any])
_PAGE_SIZE = "__leadwheel_page_size__"


@dataclass(frozen=True, slots=True)
class PageArgument:
    """The Int argument that sets how many objects a field's list holds: the field's own list, or
    (`of`, a field name in the schema) that list of the object it returns; `of` None on an object
    (a connection): every list directly inside it."""

    argument: str
    of: str | None = None


def page_size(argument: str, *, of: str) -> Callable[[F], F]:
    """Declares that the resolver's Int `argument` bounds the list `of` of the object it returns,
    for the cost estimate; put it under `@strawberry.field` / `@strawberry.subscription`."""

    def mark(resolver: F) -> F:
        setattr(resolver, _PAGE_SIZE, PageArgument(argument, of))
        return resolver

    return mark


def page_argument(definition: GraphQLField) -> PageArgument | None:
    """The field's page size argument: its resolver's `page_size`, else `first` if it takes one."""
    field = (definition.extensions or {}).get(DEFINITION_BACKREF)
    if isinstance(field, StrawberryField) and field.base_resolver is not None:
        declared = getattr(field.base_resolver.wrapped_func, _PAGE_SIZE, None)
        if isinstance(declared, PageArgument):
            return declared
    return PageArgument(FIRST) if FIRST in definition.args else None


def check_page_sizes(schema: Schema) -> None:
    """At schema build: every `page_size` names an Int argument of its field and a list field of
    the object the field returns (TypeError otherwise), so a renamed one cannot go unnoticed."""
    graphql_schema = graphql_core_schema(schema)
    for type_ in graphql_schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        for name, definition in type_.fields.items():
            declared = page_argument(definition)
            if declared is None or (declared.argument == FIRST and declared.of is None):
                continue
            where = f"{type_.name}.{name}"
            argument = definition.args.get(declared.argument)
            if argument is None or get_named_type(argument.type).name != "Int":
                raise TypeError(f"{where}: page_size({declared.argument!r}) is not an Int argument of it")
            returned, is_list = unwrap(definition.type)
            inner = getattr(returned, "fields", {}).get(declared.of)
            if is_list or inner is None or not unwrap(inner.type)[1]:
                raise TypeError(f"{where}: page_size(of={declared.of!r}) is not a list of what it returns")


@dataclass(frozen=True, slots=True)
class PageSize:
    """`first: $variable` (or another page size argument): its value at request time, else
    `fallback` (the declared default)."""

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


@dataclass(frozen=True, slots=True)
class _Page:
    """Inside an object whose field took a page size: the size of its list `of` (None: every list)."""

    size: Size
    of: str | None

    def of_list(self, name: str) -> Size | None:
        return self.size if self.of is None or self.of == name else None


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
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType, page: _Page | None
    ) -> Iterator[Node]:
        """`page`: set inside an object whose field took a page size (a connection, a feed)."""
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

    def _field(self, node: FieldNode, parent: GraphQLNamedType, page: _Page | None) -> Node | None:
        name = node.name.value
        if name.startswith("__"):
            return None
        definition: GraphQLField | None = getattr(parent, "fields", {}).get(name)
        if definition is None:
            return None
        returned, is_list = unwrap(definition.type)
        if not is_composite_type(returned) or node.selection_set is None:
            return None
        declared = page_argument(definition)
        if declared is not None:
            size = self._page_size(node, definition, declared.argument)
            if not is_list:  # a connection or a feed: the list(s) inside it are the page
                inner = _Page(size, declared.of)
                return Node(1, tuple(self._selections(node.selection_set, returned, page=inner)))
        elif is_list:
            paged = page.of_list(name) if page is not None else None
            size = paged if paged is not None else LIST_ESTIMATE
        else:
            size = 1
        return Node(size, tuple(self._selections(node.selection_set, returned, page=None)))

    def _page_size(self, node: FieldNode, definition: GraphQLField, name: str) -> Size:
        default = definition.args[name].default_value  # Undefined when the argument has none
        fallback = default if isinstance(default, int) else LIST_ESTIMATE
        for argument in node.arguments or ():
            if argument.name.value != name:
                continue
            if isinstance(argument.value, IntValueNode):
                return max(0, int(argument.value.value))
            if isinstance(argument.value, VariableNode):
                variable = argument.value.name.value
                return PageSize(variable, self.defaults.get(variable, fallback))
            return fallback  # null or a wrong literal: validation or the resolver refuses it
        return fallback


def unwrap(type_: GraphQLOutputType) -> tuple[GraphQLNamedType, bool]:
    """The named type under a field's type, and whether a list wraps it."""
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
