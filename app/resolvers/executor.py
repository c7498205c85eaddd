"""Strawberry's graphql-core executor with one fix: subscription events must not keep memory.

graphql-core 3.3 runs each subscription event on a shallow copy of the subscription's executor,
and the copy shares its sub-field cache, which is keyed on the id() of lists made anew for every
event. Each event so adds entries that live as long as the subscription: a dashboard watching a
busy niche grew the API by megabytes a minute (bench/soak.py). Each event gets its own cache."""

from __future__ import annotations

from typing import Any

from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class EventScopedExecutor(StrawberryGraphQLCoreExecutionContext):
    def build_per_event_executor(self, payload: Any) -> EventScopedExecutor:
        executor = super().build_per_event_executor(payload)
        executor._relevant_sub_fields = {}  # noqa: SLF001  (the cache the copy would share)
        return executor  # type: ignore[return-value]
