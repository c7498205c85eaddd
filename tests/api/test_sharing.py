"""app/resolvers/sharing.py: a subscription may share one execution of an event among its
subscribers only if nothing its type reaches depends on who asks, and the schema build refuses
one that would."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator

import pytest
import strawberry
from strawberry.schema.config import StrawberryConfig

from app.resolvers.context import Info
from app.resolvers.query import Query
from app.resolvers.schema import build_schema
from app.resolvers.sharing import check_sharing, shared_names, shared_subscription, viewer_dependent_fields
from app.schema.progress import RunProgress
from app.schema.scalars import SCALARS
from app.schema.types import AssignmentFeed, Lead
from tests.api.conftest import api_settings


def test_the_schema_shares_only_the_operators_run_feeds() -> None:
    schema = build_schema(api_settings())
    assert shared_names(schema._schema) == {"distributionProgress", "nicheActivity"}  # noqa: SLF001
    assert viewer_dependent_fields(schema._schema.type_map["RunProgress"]) == []  # noqa: SLF001


def test_contact_details_and_scoped_fields_are_viewer_dependent() -> None:
    schema = build_schema(api_settings())
    found = viewer_dependent_fields(schema._schema.type_map["AssignmentFeed"])  # noqa: SLF001
    assert "Lead.attributes" in found  # marked viewer_dependent
    assert "Lead.assignments" in found  # reads the principal-scoped loaders
    assert "Assignment.provider" in found


@strawberry.type
class SharesAssignments:
    @strawberry.subscription
    @shared_subscription
    async def feed(self, info: Info, id: uuid.UUID) -> AsyncGenerator[AssignmentFeed, None]:
        yield AssignmentFeed(snapshot=True, assignments=[])


@strawberry.type
class SharesLeads:
    @strawberry.subscription
    @shared_subscription
    async def feed(self, info: Info, id: uuid.UUID) -> AsyncGenerator[Lead, None]:
        if False:
            yield


@strawberry.type
class SharesRuns:
    @strawberry.subscription
    @shared_subscription
    async def feed(self, info: Info, id: uuid.UUID) -> AsyncGenerator[RunProgress, None]:
        if False:
            yield


def _schema(subscription: type) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query, subscription=subscription, config=StrawberryConfig(scalar_map=SCALARS)
    )


def test_a_shared_subscription_that_reaches_contact_details_is_refused_when_built() -> None:
    with pytest.raises(TypeError, match=r"Subscription.feed is a shared_subscription.*Lead.attributes"):
        check_sharing(_schema(SharesAssignments))
    with pytest.raises(TypeError, match="Lead.attributes"):
        check_sharing(_schema(SharesLeads))


def test_a_shared_subscription_of_plain_data_is_accepted() -> None:
    assert check_sharing(_schema(SharesRuns)) == {"feed"}
