from __future__ import annotations

import uuid

import strawberry
from strawberry.permission import BasePermission

from app.models.niches import DEFAULT_RETURN_WINDOW_HOURS, LevelStrategy
from app.resolvers.context import Info
from app.resolvers.permissions import IsAdmin
from app.schema.scalars import Cents
from app.schema.types import CompetitionLevel, Niche
from app.services import niches

ADMIN: list[type[BasePermission]] = [IsAdmin]


@strawberry.type
class NicheMutations:
    @strawberry.mutation(
        permission_classes=ADMIN, description="returnWindowHours: 0..8784; 0 turns returns off."
    )
    async def create_niche(
        self,
        info: Info,
        name: str,
        level_strategy: LevelStrategy = LevelStrategy.ALL_LEVELS,
        auto_distribute: bool = False,
        return_window_hours: int = DEFAULT_RETURN_WINDOW_HOURS,
    ) -> Niche:
        niche = await niches.create_niche(
            info.context.db,
            actor=await info.context.actor(),
            name=name,
            level_strategy=level_strategy,
            auto_distribute=auto_distribute,
            return_window_hours=return_window_hours,
        )
        return Niche.of(niche)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Only the arguments given change. A new returnWindowHours applies to requests "
        "from then on.",
    )
    async def update_niche(
        self,
        info: Info,
        id: uuid.UUID,
        name: str | None = None,
        level_strategy: LevelStrategy | None = None,
        auto_distribute: bool | None = None,
        return_window_hours: int | None = None,
    ) -> Niche:
        niche = await niches.update_niche(
            info.context.db,
            actor=await info.context.actor(),
            niche_id=id,
            name=name,
            level_strategy=level_strategy,
            auto_distribute=auto_distribute,
            return_window_hours=return_window_hours,
        )
        return Niche.of(niche)

    @strawberry.mutation(permission_classes=ADMIN, description="Without orderPosition it goes last.")
    async def create_competition_level(
        self,
        info: Info,
        niche_id: uuid.UUID,
        name: str,
        price_cents: Cents,
        max_recipients: int,
        order_position: int | None = None,
        active: bool = True,
    ) -> CompetitionLevel:
        level = await niches.create_level(
            info.context.db,
            actor=await info.context.actor(),
            niche_id=niche_id,
            name=name,
            price_cents=price_cents,
            max_recipients=max_recipients,
            order_position=order_position,
            active=active,
        )
        return CompetitionLevel.of(level)

    @strawberry.mutation(permission_classes=ADMIN)
    async def update_competition_level(
        self,
        info: Info,
        id: uuid.UUID,
        name: str | None = None,
        order_position: int | None = None,
        price_cents: Cents | None = None,
        max_recipients: int | None = None,
        active: bool | None = None,
    ) -> CompetitionLevel:
        level = await niches.update_level(
            info.context.db,
            actor=await info.context.actor(),
            level_id=id,
            name=name,
            order_position=order_position,
            price_cents=price_cents,
            max_recipients=max_recipients,
            active=active,
        )
        return CompetitionLevel.of(level)

    @strawberry.mutation(permission_classes=ADMIN, description="Soft delete; its position becomes free.")
    async def delete_competition_level(self, info: Info, id: uuid.UUID) -> CompetitionLevel:
        level = await niches.delete_level(info.context.db, actor=await info.context.actor(), level_id=id)
        return CompetitionLevel.of(level)
