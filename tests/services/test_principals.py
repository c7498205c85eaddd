"""The principal rules every service applies (app/services/principals.py)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from app.errors import Forbidden, NotFound
from app.models.audit import ActorType
from app.models.billing import Provider
from app.services.audit import SYSTEM, Actor
from app.services.principals import check_own, own_provider_id, require_operator, scope_to_own

A, B = uuid.uuid4(), uuid.uuid4()
BUYER = Actor(ActorType.USER, uuid.uuid4(), scopes=frozenset({"provider:read"}), provider_id=A)


def test_an_operator_reaches_what_it_asks_for() -> None:
    assert own_provider_id(SYSTEM, None) is None
    assert own_provider_id(SYSTEM, B) == B
    check_own(SYSTEM, B, "provider", B)
    require_operator(SYSTEM, "creating a niche")


def test_a_provider_reaches_only_its_own_and_a_foreign_id_looks_missing() -> None:
    assert own_provider_id(BUYER, None) == A
    assert own_provider_id(BUYER, A) == A
    with pytest.raises(NotFound):
        own_provider_id(BUYER, B)
    check_own(BUYER, A, "provider", A)
    with pytest.raises(NotFound) as missing:
        check_own(BUYER, B, "provider", B)
    assert str(missing.value) == f"provider {B} does not exist"
    with pytest.raises(Forbidden):
        require_operator(BUYER, "creating a niche")


def test_scoped_statements_filter_in_sql() -> None:
    stmt = sa.select(Provider.__table__)  # type: ignore[attr-defined]
    assert scope_to_own(stmt, Provider.__table__.c.id, SYSTEM) is stmt  # type: ignore[attr-defined]
    scoped = scope_to_own(stmt, Provider.__table__.c.id, BUYER)  # type: ignore[attr-defined]
    assert "WHERE providers.id = " in str(scoped)
