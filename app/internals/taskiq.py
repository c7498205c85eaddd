"""taskiq internals, for app/tasks/broker.py and app/tasks/dispatch.py. `StreamBroker.entry` builds
a job's stream entry without sending it (a pipeline or a Lua script sends it with other commands):
the message is built here as `AsyncKicker._prepare_message` builds it for a task without labels
(task_id from the broker's `id_generator`, empty labels), then encoded by the broker's `formatter`,
as `AsyncKicker.kiq` does before `broker.kick`."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from taskiq import AckableMessage, AsyncBroker, BrokerMessage, TaskiqMessage
from taskiq.kicker import AsyncKicker

from app.internals.checks import Library, Use

DISTRIBUTION = "taskiq"
WRITTEN_AGAINST = "0.13.0"
BROKER = "app/tasks/broker.py"
_FIELDS = {"task_id", "task_name", "labels", "labels_types", "args", "kwargs"}


def task_message(
    broker: AsyncBroker, task_name: str, args: list[Any], kwargs: dict[str, Any]
) -> TaskiqMessage:
    """The message `task_name.kiq(*args, **kwargs)` sends, for a task registered without labels."""
    return TaskiqMessage(
        task_id=broker.id_generator(),
        task_name=task_name,
        labels={},
        labels_types={},
        args=args,
        kwargs=kwargs,
    )


class _ProbeBroker(AsyncBroker):
    """A broker that sends nothing: what AsyncBroker itself sets up."""

    async def kick(self, message: BrokerMessage) -> None:
        raise NotImplementedError

    async def listen(self) -> AsyncGenerator[bytes | AckableMessage, None]:
        raise NotImplementedError
        yield b""


def _broker_attributes() -> str | None:
    broker = _ProbeBroker()
    missing = [name for name in ("id_generator", "formatter") if not hasattr(broker, name)]
    return f"an AsyncBroker has no {', '.join(missing)}" if missing else None


def _message_fields() -> str | None:
    fields = TaskiqMessage.model_fields
    required = {name for name, field in fields.items() if field.is_required()}
    if missing := _FIELDS - set(fields):
        return f"TaskiqMessage has no {', '.join(sorted(missing))}"
    if extra := required - _FIELDS:
        return f"TaskiqMessage now requires {', '.join(sorted(extra))}"
    return None


def _as_the_kicker_builds_it() -> str | None:
    broker = _ProbeBroker()
    ours = task_message(broker, "probe", ["a"], {"k": "v"}).model_dump(exclude={"task_id"})
    theirs = AsyncKicker("probe", broker, {})._prepare_message("a", k="v").model_dump(exclude={"task_id"})  # noqa: SLF001
    if ours != theirs:
        return f"a kick of a task without labels now sends {theirs}, not {ours}"
    return None


def _formatter() -> str | None:
    broker = _ProbeBroker()
    encoded = broker.formatter.dumps(task_message(broker, "probe", [], {}))
    if not isinstance(encoded, BrokerMessage) or not isinstance(encoded.message, bytes):
        return "broker.formatter.dumps(message) no longer gives a BrokerMessage of bytes"
    return None


LIBRARY = Library(
    DISTRIBUTION,
    WRITTEN_AGAINST,
    "app/internals/taskiq.py",
    (
        Use("TaskiqMessage fields", BROKER, _message_fields),
        Use("AsyncKicker._prepare_message (what a kick sends)", BROKER, _as_the_kicker_builds_it),
        Use("AsyncBroker.id_generator, formatter", BROKER, _broker_attributes),
        Use("AsyncBroker.formatter.dumps(message).message", BROKER, _formatter),
    ),
)
