"""The start-up checks of library internals (app/internals/): each passes on the installed versions,
and each reports its library, the version found and the module to update when its target is gone
(the target is monkeypatched away on the library itself). A new check without a way to break it
here fails `test_every_use_can_be_broken_here`."""

from __future__ import annotations

import re
import tomllib
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.util
import strawberry
from graphql import Executor
from starlette.websockets import WebSocket
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.dataloader import DataLoader
from strawberry.extensions import MaskErrors
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.types.execution import ExecutionContext
from strawberry.types.fields.resolver import StrawberryResolver
from taskiq import AsyncBroker, TaskiqMessage
from taskiq.formatters.proxy_formatter import ProxyFormatter
from taskiq.kicker import AsyncKicker
from taskiq_redis import RedisStreamBroker
from typer.testing import CliRunner
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

import app.internals
from app.internals import InternalsChanged, check_all, libraries
from app.internals.checks import Library, Use

ROOT = Path(__file__).resolve().parents[2]
Breaker = Callable[[pytest.MonkeyPatch], None]


@pytest.fixture(autouse=True)
def unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_all runs its checks once per process: make it run them again in each test."""
    monkeypatch.setattr(app.internals, "_checked", False)


def after_init(owner: type, change: Callable[[Any], None]) -> Breaker:
    """owner's instances get `change` applied once built (for attributes set in __init__)."""

    def breaker(monkeypatch: pytest.MonkeyPatch) -> None:
        init = owner.__init__

        def changed(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            change(self)

        monkeypatch.setattr(owner, "__init__", changed)

    return breaker


def without(owner: type, name: str) -> Breaker:
    """owner (or the class of its MRO that defines it) loses the attribute."""

    def breaker(monkeypatch: pytest.MonkeyPatch) -> None:
        defining = next(cls for cls in owner.__mro__ if name in vars(cls))
        monkeypatch.delattr(defining, name)

    return breaker


def replaced(owner: type, name: str, value: object) -> Breaker:
    def breaker(monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(owner, name, value)

    return breaker


def _drop(name: str) -> Callable[[Any], None]:
    def change(obj: Any) -> None:
        delattr(obj, name)

    return change


def _plain_variables(executor: Any) -> None:
    executor.variable_values = {"v": 1}  # no .coerced


def _without_field(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {k: v for k, v in ExecutionContext.__dataclass_fields__.items() if k != "parse_options"}
    monkeypatch.setattr(ExecutionContext, "__dataclass_fields__", fields)


def _new_required_field(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = dict(TaskiqMessage.__pydantic_fields__)
    fields["priority"] = TaskiqMessage.__pydantic_fields__["task_name"]  # a required str
    monkeypatch.setattr(TaskiqMessage, "__pydantic_fields__", fields)


def _labelled_message(self: Any, *args: Any, **kwargs: Any) -> TaskiqMessage:
    return TaskiqMessage(
        task_id="x",
        task_name=self.task_name,
        labels={"p": "1"},
        labels_types={},
        args=list(args),
        kwargs=kwargs,
    )


async def _listen_elsewhere(self: Any) -> AsyncGenerator[Any, None]:
    yield {"payload": "a field of another name"}


BREAKERS: dict[str, Breaker] = {
    # graphql-core
    "graphql.Executor.build_per_event_executor(self, payload)": without(Executor, "build_per_event_executor"),
    "graphql.Executor.build_per_event_executor: a copy on the payload": replaced(
        Executor, "build_per_event_executor", lambda self, payload: self
    ),
    "graphql.Executor.execute_operation(self, serially)": replaced(
        Executor, "execute_operation", lambda self: None
    ),
    "graphql.Executor._relevant_sub_fields": after_init(Executor, _drop("_relevant_sub_fields")),
    "graphql.Executor: operation, root_value, variable_values.coerced, is_awaitable": after_init(
        Executor, _plain_variables
    ),
    "graphql.Executor.execute_fields(self, parent_type, source_value, path, grouped_field_set, "
    "position_context)": replaced(
        Executor, "execute_fields", lambda self, parent_type, source, path, fields: None
    ),
    "graphql.Executor.collect_subfields: (grouped fields, defer usages, forbidden)": replaced(
        Executor, "collect_subfields", lambda self, return_type, field_group: ({}, [])
    ),
    "graphql.Executor.build_resolve_info(self, field_def, field_nodes, parent_type, path)": replaced(
        Executor, "build_resolve_info", lambda self, field_def, field_nodes, path: None
    ),
    "graphql.Executor: schema, middleware_manager.middlewares, build_resolve_info, is_awaitable": after_init(
        Executor, lambda executor: setattr(executor, "middleware_manager", object())
    ),
    # strawberry-graphql
    "strawberry.schema.schema.StrawberryGraphQLCoreExecutionContext": lambda mp: mp.setattr(
        app.internals.strawberry_graphql, "StrawberryGraphQLCoreExecutionContext", object
    ),
    "strawberry.Schema(execution_context_class=…)": replaced(
        strawberry.Schema, "__init__", lambda self, query: None
    ),
    "BaseGraphQLTransportWSHandler.run_operation(self, operation)": without(
        BaseGraphQLTransportWSHandler, "run_operation"
    ),
    "BaseGraphQLTransportWSHandler.send_message(self, message)": replaced(
        BaseGraphQLTransportWSHandler, "send_message", lambda self, message, binary: None
    ),
    "Operation.id, handler, completed": after_init(Operation, _drop("completed")),
    "BaseGraphQLTransportWSHandler.websocket, ASGIWebSocketAdapter.ws": after_init(
        ASGIWebSocketAdapter, _drop("ws")
    ),
    "strawberry.asgi.GraphQL.graphql_transport_ws_handler_class": without(
        GraphQL, "graphql_transport_ws_handler_class"
    ),
    "strawberry.Schema._schema": after_init(strawberry.Schema, _drop("_schema")),
    "GraphQLCoreConverter.DEFINITION_BACKREF": without(GraphQLCoreConverter, "DEFINITION_BACKREF"),
    "StrawberryField and StrawberryResolver attributes": without(StrawberryResolver, "info_parameter"),
    "MaskErrors._process_result(self, result)": without(MaskErrors, "_process_result"),
    "MaskErrors._process_errors(self, errors)": replaced(
        MaskErrors, "_process_errors", lambda self, errors, result: errors
    ),
    "MaskErrors.anonymise_error(self, error)": without(MaskErrors, "anonymise_error"),
    "ExecutionContext.query, graphql_document, parse_options": _without_field,
    "DataLoader.load returns a Future": replaced(DataLoader, "load", lambda self, key: object()),
    # taskiq
    "TaskiqMessage fields": _new_required_field,
    "AsyncKicker._prepare_message (what a kick sends)": replaced(
        AsyncKicker, "_prepare_message", _labelled_message
    ),
    "AsyncBroker.id_generator, formatter": after_init(AsyncBroker, _drop("formatter")),
    "AsyncBroker.formatter.dumps(message).message": replaced(ProxyFormatter, "dumps", lambda self, m: b"{}"),
    # sqlalchemy
    "sqlalchemy.util.greenlet_spawn(fn, *args)": lambda mp: mp.delattr(sqlalchemy.util, "greenlet_spawn"),
    # taskiq-redis
    "RedisStreamBroker._ack_generator(self, id, queue_name)": without(RedisStreamBroker, "_ack_generator"),
    "RedisStreamBroker.kick(self, message)": replaced(
        RedisStreamBroker, "kick", lambda self, message, queue: None
    ),
    "RedisStreamBroker: connection_pool, queue_name, consumer_group_name, maxlen, approximate": after_init(
        RedisStreamBroker, _drop("approximate")
    ),
    "the stream entry: one field, data": replaced(RedisStreamBroker, "listen", _listen_elsewhere),
    # starlette
    "the scope a middleware set reaches the WebSocket endpoint": after_init(
        WebSocket,
        lambda socket: setattr(socket, "scope", {k: v for k, v in socket.scope.items() if "." not in k}),
    ),
    "WebSocket.application_state, WebSocketState": after_init(WebSocket, _drop("application_state")),
    # uvicorn
    "WebSocketsSansIOProtocol.send(self, message)": replaced(
        WebSocketsSansIOProtocol, "send", lambda self, message, binary: None
    ),
    "WebSocketsSansIOProtocol: writable, disconnected, close_sent, handshake_complete, "
    "initial_response, conn.send_text, conn.data_to_send, transport": after_init(
        WebSocketsSansIOProtocol, _drop("writable")
    ),
}

USES: list[tuple[Library, Use]] = [(library, use) for library in libraries() for use in library.uses]


def test_every_check_passes_on_the_installed_versions() -> None:
    for library in libraries():
        assert library.problems() == [], library.distribution
    check_all()


def test_every_use_can_be_broken_here() -> None:
    assert sorted(use.target for _, use in USES) == sorted(BREAKERS)


@pytest.mark.parametrize(("library", "use"), USES, ids=[use.target for _, use in USES])
def test_a_missing_internal_stops_the_start_naming_library_version_and_module(
    library: Library, use: Use, monkeypatch: pytest.MonkeyPatch
) -> None:
    BREAKERS[use.target](monkeypatch)
    assert _problem(use) is not None
    with pytest.raises(InternalsChanged) as refused:
        check_all()
    message = str(refused.value)
    assert f"{library.distribution} {library.found_version()} is installed" in message
    assert f"{library.module} was written against {library.written_against}" in message
    assert f"{use.target} (used by {use.used_in})" in message
    assert f"Update {library.module}" in message


def _problem(use: Use) -> str | None:
    try:
        return use.check()
    except Exception as exc:  # noqa: BLE001  (Library.problems reports a check that raises, too)
        return repr(exc)


def test_a_changed_signature_is_shown_as_found_and_as_expected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MaskErrors, "_process_errors", lambda self, errors, result: errors)
    with pytest.raises(
        InternalsChanged, match=re.escape("_process_errors(self, errors, result) is no longer")
    ):
        check_all()


def test_a_private_import_that_moved_fails_with_the_same_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy
    import sys

    monkeypatch.setitem(sys.modules, "strawberry.schema.schema_converter", None)  # import fails
    path = ROOT / "app" / "internals" / "strawberry_graphql.py"
    with pytest.raises(InternalsChanged) as refused:
        runpy.run_path(str(path), run_name="moved_probe")
    message = str(refused.value)
    assert "strawberry-graphql" in message
    assert "cannot import" in message
    assert "app/internals/strawberry_graphql.py" in message


def test_written_against_is_what_the_lock_pins() -> None:
    """Moving the lock to another release means reading the library's module here again."""
    locked = {p["name"]: p["version"] for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
    for library in libraries():
        assert library.written_against == locked[library.distribution], library.module


def test_every_library_reached_under_is_capped_below_its_next_release_line() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]: r for r in project["dependencies"]}
    for library in libraries():
        requirement = requirements[library.distribution]
        assert "<" in requirement, f"{requirement}: cap it below the next release line"


# --- each process checks when it starts ---------------------------------------------------------


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(MaskErrors, "_process_result")


@pytest.mark.usefixtures("broken")
def test_the_api_refuses_to_start() -> None:
    from app.main import create_app

    with pytest.raises(InternalsChanged, match="MaskErrors._process_result"):
        create_app()


@pytest.mark.usefixtures("broken")
async def test_a_worker_refuses_to_start_before_opening_anything() -> None:
    from taskiq import TaskiqState

    from app.tasks.worker import open_resources

    state = TaskiqState()
    with pytest.raises(InternalsChanged, match="strawberry-graphql"):
        await open_resources(state)
    assert not hasattr(state, "db")


@pytest.mark.usefixtures("broken")
async def test_the_scheduler_refuses_to_start() -> None:
    from app.tasks.scheduler import scheduler

    with pytest.raises(InternalsChanged, match="strawberry-graphql"):
        await scheduler.startup()


@pytest.mark.usefixtures("broken")
@pytest.mark.parametrize("command", ["serve", "worker", "scheduler"])
def test_the_commands_that_start_processes_refuse_with_the_message(command: str) -> None:
    from app.cli import cli

    result = CliRunner().invoke(cli, [command])
    assert result.exit_code == 1
    assert "strawberry-graphql" in result.output
    assert "app/internals/strawberry_graphql.py" in result.output


def test_checks_run_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    check_all()
    monkeypatch.delattr(MaskErrors, "_process_result")
    check_all()  # already checked: no second look


def test_checks_take_milliseconds() -> None:
    import time

    started = time.perf_counter()
    check_all()
    assert time.perf_counter() - started < 0.5
