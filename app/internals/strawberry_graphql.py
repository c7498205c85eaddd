"""Strawberry internals. The private classes are imported from here, so a move fails at once with
this module's message:

- app/resolvers/executor.py subclasses `StrawberryGraphQLCoreExecutionContext` (Strawberry's
  graphql-core executor; the schema takes the subclass as `execution_context_class`).
- app/resolvers/relay.py and app/main.py: graphql-transport-ws. `RelayingHandler` overrides
  `BaseGraphQLTransportWSHandler.run_operation(operation)` (the task of each operation) and
  `send_message(message)` (every frame), and writes encoded frames to the Starlette WebSocket
  behind its `websocket` adapter (`ASGIWebSocketAdapter.ws`, read through `starlette_socket`);
  `Relay` reads `Operation.id`, `handler` and `completed`; the view installs the handler as
  `graphql_transport_ws_handler_class`.
- app/resolvers/direct.py hands resolvers to graphql-core: the graphql-core schema behind a Strawberry
  schema (`Schema._schema`, read through `graphql_core_schema`), the field back-reference
  (`GraphQLCoreConverter.DEFINITION_BACKREF`), `StrawberryField.base_resolver`, `arguments`,
  `extensions`, `python_name`, and `StrawberryResolver.wrapped_func`, `signature`,
  `self_parameter`, `info_parameter`.
- app/resolvers/errors.py overrides `MaskErrors._process_result(result)` and calls
  `_process_errors(errors)`; MaskErrors calls `anonymise_error(error)`, which it also overrides.
- app/resolvers/caching.py sets `ExecutionContext.graphql_document` in `on_parse` (read from
  `query` and `parse_options`), which Strawberry then does not parse again.
- app/resolvers/loaders.py (`load_now`): `DataLoader.load` returns an asyncio Future, already done
  when the key is cached, so a prefetched value is read without awaiting."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import strawberry
from graphql import GraphQLSchema
from starlette.websockets import WebSocket
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.dataloader import DataLoader
from strawberry.extensions import MaskErrors
from strawberry.types.execution import ExecutionContext
from strawberry.types.field import StrawberryField

from app.internals.checks import Library, Use, has, import_failure, takes, takes_keyword

DISTRIBUTION = "strawberry-graphql"
WRITTEN_AGAINST = "0.341.2"
MODULE = "app/internals/strawberry_graphql.py"

try:
    from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
    from strawberry.schema.schema_converter import GraphQLCoreConverter
    from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
        BaseGraphQLTransportWSHandler,
        Operation,
    )
    from strawberry.types.fields.resolver import StrawberryResolver
except ImportError as error:
    raise import_failure(DISTRIBUTION, WRITTEN_AGAINST, MODULE, error) from error

__all__ = [
    "DEFINITION_BACKREF",
    "LIBRARY",
    "BaseGraphQLTransportWSHandler",
    "Operation",
    "StrawberryGraphQLCoreExecutionContext",
    "graphql_core_schema",
]

# the key of a graphql-core field's extensions that holds its StrawberryField
DEFINITION_BACKREF: str = getattr(GraphQLCoreConverter, "DEFINITION_BACKREF", "strawberry-definition")


def graphql_core_schema(schema: strawberry.Schema) -> GraphQLSchema:
    """The graphql-core schema Strawberry built and executes (Strawberry has no public accessor)."""
    return schema._schema  # noqa: SLF001


def starlette_socket(adapter: object) -> WebSocket:
    """The Starlette WebSocket a graphql-transport-ws handler's adapter writes to."""
    return adapter.ws  # type: ignore[attr-defined,no-any-return]


# --- checks -------------------------------------------------------------------------------------


@strawberry.type(name="Probe")
class _Probe:
    plain: int

    @strawberry.field
    def computed(self, info: strawberry.Info) -> int:
        return 1


@strawberry.type(name="Query")
class _ProbeQuery:
    probe: _Probe


def _probe_schema() -> strawberry.Schema:
    return strawberry.Schema(query=_ProbeQuery)


def _graphql_core_schema() -> str | None:
    if not isinstance(getattr(_probe_schema(), "_schema", None), GraphQLSchema):
        return "a Schema has no graphql-core GraphQLSchema in _schema"
    return None


def _field_backref() -> str | None:
    if not isinstance(getattr(GraphQLCoreConverter, "DEFINITION_BACKREF", None), str):
        return "GraphQLCoreConverter has no DEFINITION_BACKREF"
    probe = graphql_core_schema(_probe_schema()).type_map["Probe"]
    fields = getattr(probe, "fields", {})
    found = [(fields[name].extensions or {}).get(DEFINITION_BACKREF) for name in ("plain", "computed")]
    if not all(isinstance(field, StrawberryField) for field in found):
        return f"a graphql-core field's extensions[{DEFINITION_BACKREF!r}] is no longer its StrawberryField"
    return None


def _computed(self: Any, info: strawberry.Info) -> int:
    return 1


def _field_attributes() -> str | None:
    field = strawberry.field(resolver=_computed)  # a new one each time: no cached properties
    missing = [
        f"StrawberryField.{name}"
        for name in ("base_resolver", "arguments", "extensions", "python_name")
        if not hasattr(field, name)
    ]
    resolver = getattr(field, "base_resolver", None)
    if not isinstance(resolver, StrawberryResolver):
        return "StrawberryField.base_resolver is not a StrawberryResolver"
    missing += [
        f"StrawberryResolver.{name}"
        for name in ("wrapped_func", "signature", "self_parameter", "info_parameter")
        if not hasattr(resolver, name)
    ]
    if missing:
        return f"no {', '.join(missing)}"
    parameters = list(resolver.signature.parameters.values())
    if parameters != [resolver.self_parameter, resolver.info_parameter]:
        return "a (self, info) resolver's signature is not [self_parameter, info_parameter]"
    return None


def _execution_context_class() -> str | None:
    from graphql import Executor

    if not issubclass(StrawberryGraphQLCoreExecutionContext, Executor):
        return "StrawberryGraphQLCoreExecutionContext is not a graphql-core Executor"
    return None


def _execution_context_fields() -> str | None:
    names = {field.name for field in dataclasses.fields(ExecutionContext)}
    missing = {"query", "graphql_document", "parse_options"} - names
    return f"ExecutionContext has no {', '.join(sorted(missing))}" if missing else None


def _operation_attributes() -> str | None:
    handler = object()
    operation: Any = Operation(handler, "probe", "subscription { a }", None, None)  # type: ignore[arg-type]
    if getattr(operation, "id", None) != "probe":
        return "an Operation has no id"
    if getattr(operation, "handler", None) is not handler:
        return "an Operation's handler is not the one it was made with"
    if getattr(operation, "completed", None) is not False:
        return "a new Operation's completed is not False"
    return None


def _handler_socket() -> str | None:
    adapter: Any = object()
    try:
        handler: Any = BaseGraphQLTransportWSHandler(
            view=None,  # type: ignore[arg-type]
            websocket=adapter,
            context=None,
            root_value=None,
            schema=None,  # type: ignore[arg-type]
            connection_init_wait_timeout=None,  # type: ignore[arg-type]
        )
    except TypeError as error:
        return f"BaseGraphQLTransportWSHandler(view, websocket, context, …) fails: {error}"
    if getattr(handler, "websocket", None) is not adapter:
        return "BaseGraphQLTransportWSHandler.websocket is not its adapter"
    socket: Any = object()
    if getattr(ASGIWebSocketAdapter(None, socket, socket), "ws", None) is not socket:  # type: ignore[arg-type]
        return "ASGIWebSocketAdapter.ws is not the WebSocket it writes to"
    return None


def _dataloader_future() -> str | None:
    async def load(keys: list[int]) -> list[int]:
        return keys

    loop = asyncio.new_event_loop()
    try:
        loader: DataLoader[int, int] = DataLoader(load, loop=loop)
        loader.prime(1, 1)
        found: Any = loader.load(1)
        if not (isinstance(found, asyncio.Future) and found.done() and found.result() == 1):
            return "DataLoader.load of a cached key no longer returns a done asyncio.Future"
    finally:
        loop.close()
    return None


RELAY = "app/resolvers/relay.py"
DIRECT = "app/resolvers/direct.py"
SHARING = "app/resolvers/sharing.py"
COST = "app/resolvers/cost.py"
ERRORS = "app/resolvers/errors.py"

LIBRARY = Library(
    DISTRIBUTION,
    WRITTEN_AGAINST,
    MODULE,
    (
        Use(
            "strawberry.schema.schema.StrawberryGraphQLCoreExecutionContext",
            "app/resolvers/executor.py",
            _execution_context_class,
        ),
        Use(
            "strawberry.Schema(execution_context_class=…)",
            "app/resolvers/schema.py",
            takes_keyword(strawberry.Schema, "__init__", "execution_context_class"),
        ),
        Use(
            "BaseGraphQLTransportWSHandler.run_operation(self, operation)",
            RELAY,
            takes(BaseGraphQLTransportWSHandler, "run_operation", ("self", "operation")),
        ),
        Use(
            "BaseGraphQLTransportWSHandler.send_message(self, message)",
            RELAY,
            takes(BaseGraphQLTransportWSHandler, "send_message", ("self", "message")),
        ),
        Use("Operation.id, handler, completed", RELAY, _operation_attributes),
        Use("BaseGraphQLTransportWSHandler.websocket, ASGIWebSocketAdapter.ws", RELAY, _handler_socket),
        Use(
            "strawberry.asgi.GraphQL.graphql_transport_ws_handler_class",
            "app/main.py",
            has(GraphQL, "graphql_transport_ws_handler_class"),
        ),
        Use("strawberry.Schema._schema", f"{DIRECT}, {SHARING}, {RELAY}, {COST}", _graphql_core_schema),
        Use("GraphQLCoreConverter.DEFINITION_BACKREF", f"{DIRECT}, {SHARING}", _field_backref),
        Use("StrawberryField and StrawberryResolver attributes", DIRECT, _field_attributes),
        Use(
            "MaskErrors._process_result(self, result)",
            ERRORS,
            takes(MaskErrors, "_process_result", ("self", "result")),
        ),
        Use(
            "MaskErrors._process_errors(self, errors)",
            ERRORS,
            takes(MaskErrors, "_process_errors", ("self", "errors")),
        ),
        Use(
            "MaskErrors.anonymise_error(self, error)",
            ERRORS,
            takes(MaskErrors, "anonymise_error", ("self", "error")),
        ),
        Use(
            "ExecutionContext.query, graphql_document, parse_options",
            "app/resolvers/caching.py",
            _execution_context_fields,
        ),
        Use("DataLoader.load returns a Future", "app/resolvers/loaders.py", _dataloader_future),
    ),
)
