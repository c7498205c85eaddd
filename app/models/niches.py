from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import enum_check, money, now_column, timestamp, uuid_pk

DEFAULT_RETURN_WINDOW_HOURS = 72


class LevelStrategy(StrEnum):
    ALL_LEVELS = "ALL_LEVELS"
    FIRST_MATCH = "FIRST_MATCH"


class Niche(SQLModel, table=True):
    __tablename__ = "niches"
    __table_args__ = (
        sa.CheckConstraint("next_start_level_order_position >= 1", name="next_start_positive"),
        enum_check("level_strategy", LevelStrategy, "level_strategy"),
        sa.CheckConstraint("return_window_hours >= 0", name="return_window_hours_non_negative"),
        # rotation updates this row once per lead: keep those updates HOT
        {"postgresql_with": {"fillfactor": 80}},
    )

    id: uuid.UUID = uuid_pk()
    name: str = Field(sa_column_kwargs={"unique": True, "nullable": False})
    next_start_level_order_position: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    level_strategy: LevelStrategy = Field(
        default=LevelStrategy.ALL_LEVELS,
        sa_type=sa.Text,
        sa_column_kwargs={"server_default": "ALL_LEVELS"},
    )
    auto_distribute: bool = Field(default=False, sa_column_kwargs={"server_default": "false"})
    # how long after an assignment its provider may ask to return it; 0 turns returns off
    return_window_hours: int = Field(
        default=DEFAULT_RETURN_WINDOW_HOURS,
        sa_column_kwargs={"server_default": str(DEFAULT_RETURN_WINDOW_HOURS)},
    )
    # The latest last_received_at the engine gave any subscription of this niche: the next
    # distribution stamps its picks after it, so each level's queue stays FIFO even if the clock
    # steps back. Written under the niche's row lock, with the rotation.
    last_served_at: datetime | None = timestamp()
    created_at: datetime = now_column()


class CompetitionLevel(SQLModel, table=True):
    __tablename__ = "competition_levels"
    __table_args__ = (
        sa.CheckConstraint("order_position >= 1", name="order_position_positive"),
        sa.CheckConstraint("price_cents >= 0", name="price_cents_non_negative"),
        sa.CheckConstraint("max_recipients >= 1", name="max_recipients_positive"),
        # a deleted level frees its position
        sa.Index(
            "uq_competition_levels_niche_position",
            "niche_id",
            "order_position",
            unique=True,
            postgresql_where=sa.text("deleted_at IS NULL"),
        ),
    )

    id: uuid.UUID = uuid_pk()
    niche_id: uuid.UUID = Field(foreign_key="niches.id", nullable=False)
    name: str
    order_position: int
    price_cents: int = money()
    max_recipients: int
    active: bool = Field(default=True, sa_column_kwargs={"server_default": "true"})
    deleted_at: datetime | None = timestamp()
    created_at: datetime = now_column()
