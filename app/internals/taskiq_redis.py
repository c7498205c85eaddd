"""taskiq-redis internals, for app/tasks/broker.py (`StreamBroker`) and app/tasks/dispatch.py:

- `RedisStreamBroker._ack_generator(id, queue_name)` is overridden so that acknowledgements use one
  client on the broker's pool (`listen` calls it by keyword for every message it yields);
- `kick(message)` is overridden likewise, and `add_job` and dispatch.py's Lua script write stream
  entries themselves: an entry is one field, `data`, holding the formatted message, as `kick`
  writes it and `listen` reads it, trimmed by `maxlen` and `approximate`;
- they read the broker's `connection_pool`, `queue_name`, `consumer_group_name`, `maxlen` and
  `approximate`."""

from __future__ import annotations

import inspect

from taskiq_redis import RedisStreamBroker

from app.internals.checks import Library, Use, takes

DISTRIBUTION = "taskiq-redis"
WRITTEN_AGAINST = "1.2.4"
BROKER = "app/tasks/broker.py"
BOTH = "app/tasks/broker.py, app/tasks/dispatch.py"
ENTRY_FIELD = 'b"data"'


def _attributes() -> str | None:
    # nothing connects until a command is sent
    broker = RedisStreamBroker(
        "redis://127.0.0.1:6379/0", queue_name="q", consumer_group_name="g", maxlen=7, approximate=False
    )
    expected = {"queue_name": "q", "consumer_group_name": "g", "maxlen": 7, "approximate": False}
    wrong = [name for name, value in expected.items() if getattr(broker, name, None) != value]
    if not hasattr(broker, "connection_pool"):
        wrong.append("connection_pool")
    return f"a RedisStreamBroker no longer keeps {', '.join(wrong)}" if wrong else None


def _entry_format() -> str | None:
    for method in ("kick", "listen"):
        if ENTRY_FIELD not in inspect.getsource(getattr(RedisStreamBroker, method)):
            return f"RedisStreamBroker.{method} no longer uses the stream entry field {ENTRY_FIELD}"
    return None


LIBRARY = Library(
    DISTRIBUTION,
    WRITTEN_AGAINST,
    "app/internals/taskiq_redis.py",
    (
        Use(
            "RedisStreamBroker._ack_generator(self, id, queue_name)",
            BROKER,
            takes(RedisStreamBroker, "_ack_generator", ("self", "id", "queue_name")),
        ),
        Use(
            "RedisStreamBroker.kick(self, message)",
            BROKER,
            takes(RedisStreamBroker, "kick", ("self", "message")),
        ),
        Use(
            "RedisStreamBroker: connection_pool, queue_name, consumer_group_name, maxlen, approximate",
            BOTH,
            _attributes,
        ),
        Use("the stream entry: one field, data", BOTH, _entry_format),
    ),
)
