"""Strawberry's graphql-core executor, with two changes for subscriptions.

1. Events keep no memory. graphql-core 3.3 runs each event on a shallow copy of the subscription's
   executor that shares its sub-field cache, keyed on the id() of lists made anew per event: every
   event stayed in memory for the subscription's life (a busy dashboard grew the API by megabytes a
   minute, bench/soak.py). Each event gets its own cache.
2. One execution per event and operation, for the subscriptions app/resolvers/sharing.py lets
   share (checked when the schema is built: their types hold nothing that depends on who asks).
   A niche's live events reach every watcher of the niche as the same RunProgress object
   (app/schema/progress.py), which holds plain data only: the same event, document and variables
   give the same result whoever subscribed. The first subscriber's result is shared by the others
   instead of executing the selection again for each, and they are not even given a copy of the
   executor (a copy per subscriber and event was 6% of a 1,000-subscriber fan-out). Any other
   subscription executes each event for each subscriber.

The graphql-core and Strawberry internals used here are listed and checked in app/internals/."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from app.resolvers.completion import DirectCompletion
from app.resolvers.sharing import root_field, shared_names

SHARED_RESULTS_MAX = 1024  # recent (event, operation, variables) results; a laggard re-executes


@dataclass(slots=True)
class SharedResult:
    # the key holds their id()s: kept here, they cannot die and have their ids reused
    payload: object
    operation: object
    result: Any  # graphql-core's ExecutionResult
    encoded: str | None = None  # the payload Strawberry then sent, if data alone (app/resolvers/relay.py)


_shared: dict[tuple[int, int, Hashable], SharedResult] = {}


def variables_key(coerced: dict[str, Any]) -> Hashable | None:
    """An operation's coerced variables as a hashable key; None if one is not hashable (a list:
    such a subscription is not shared)."""
    variables = tuple(sorted(coerced.items()))
    try:
        hash(variables)
    except TypeError:
        return None
    return variables


def shared_result(payload: object, operation: object, variables: Hashable) -> SharedResult | None:
    """What another subscriber's execution of this event, operation and variables produced, if it
    is still kept."""
    found = _shared.get((id(payload), id(operation), variables))
    if found is not None and found.payload is payload and found.operation is operation:
        return found
    return None


class _Shared:
    """Stands in for a per-event executor whose result another subscriber already computed."""

    __slots__ = ("result",)

    def __init__(self, result: Any) -> None:
        self.result = result

    def execute_operation(self, serially: bool | None = None) -> Any:
        return self.result


class EventScopedExecutor(DirectCompletion):
    def build_per_event_executor(self, payload: Any) -> EventScopedExecutor:
        if self._shareable() and (variables := self._variables_key()) is not None:
            shared = shared_result(payload, self.operation, variables)
            if shared is not None:
                return _Shared(shared.result)  # type: ignore[return-value]
        executor = super().build_per_event_executor(payload)
        executor._relevant_sub_fields = {}  # noqa: SLF001  (the copy's own; app/internals/graphql_core.py)
        assert isinstance(executor, DirectCompletion)
        executor.reset_plans()  # keyed on the same per-event ids (app/resolvers/completion.py)
        return executor  # type: ignore[return-value]

    def _shared_key(self, payload: Any) -> tuple[int, int, Hashable] | None:
        if not self._shareable():
            return None
        variables = self._variables_key()
        return None if variables is None else (id(payload), id(self.operation), variables)

    def _shareable(self) -> bool:
        """Whether this subscription's root field passed the schema's sharing check; once per
        subscription (the per-event copies inherit it)."""
        try:
            return self.__dict__["_shared_root"]  # type: ignore[no-any-return]
        except KeyError:
            pass
        shared = self.__dict__["_shared_root"] = root_field(self.operation) in shared_names(self.schema)
        return shared

    def _variables_key(self) -> Hashable | None:
        """Computed once per subscription: hashing its UUIDs for every event and subscriber was 4%
        of a fan-out."""
        try:
            return self.__dict__["_variables"]  # type: ignore[no-any-return]
        except KeyError:
            pass
        variables = self.__dict__["_variables"] = variables_key(self.variable_values.coerced)
        return variables

    def execute_operation(self, serially: bool | None = None) -> Any:
        payload = self.root_value
        key = self._shared_key(payload)
        if key is None:
            return super().execute_operation(serially)
        result = super().execute_operation(serially)
        if not self.is_awaitable(result):
            if len(_shared) >= SHARED_RESULTS_MAX:
                del _shared[next(iter(_shared))]
            _shared[key] = SharedResult(payload, self.operation, result)
        return result
