"""Look-ahead: a list resolver that knows its items fetches the nested data the query selected
through the same dataloaders (one `= ANY` query per kind), before the nested resolvers run. They then
answer synchronously from the loader cache (loaders.load_now). Nothing is fetched that the query
did not select."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from app.models.leads import Assignment, Lead
from app.resolvers.context import Info


def _children(selections: Iterable[Any], name: str) -> list[Any]:
    found: list[Any] = []
    for selection in selections:
        if isinstance(selection, FragmentSpread | InlineFragment):
            found.extend(_children(selection.selections, name))
        elif isinstance(selection, SelectedField) and selection.name == name:
            found.extend(selection.selections)
    return found


def selected(info: Info, *path: str) -> list[Any] | None:
    """The selections under `path` below the current field, or None if it is not selected."""
    level = [s for field in info.selected_fields for s in field.selections]
    for name in path:
        if not _has(level, name):
            return None
        level = _children(level, name)
    return level


def _has(selections: Iterable[Any], name: str) -> bool:
    for selection in selections:
        if isinstance(selection, FragmentSpread | InlineFragment):
            if _has(selection.selections, name):
                return True
        elif isinstance(selection, SelectedField) and selection.name == name:
            return True
    return False


async def prefetch_assignments(info: Info, assignments: Sequence[Assignment], selections: list[Any]) -> None:
    loaders = info.context.loaders
    batches: list[Awaitable[Any]] = []  # independent: run at once, one connection each
    if _has(selections, "provider"):
        batches.append(loaders.provider.load_many(list({a.provider_id for a in assignments})))
    if _has(selections, "competitionLevel"):
        batches.append(loaders.level.load_many(list({a.competition_level_id for a in assignments})))
    if _has(selections, "lead"):
        batches.append(loaders.lead.load_many(list({a.lead_id for a in assignments})))
    await asyncio.gather(*batches)


async def prefetch_for_leads(info: Info, leads: Sequence[Lead], *path: str) -> None:
    """For leads found at `path` in the selection (e.g. "edges", "node")."""
    node = selected(info, *path)
    if node is None or not leads:
        return
    loaders = info.context.loaders
    loaders.lead.prime_many({lead.id: lead for lead in leads})
    ids = [lead.id for lead in leads]
    if _has(node, "niche"):
        await loaders.niche.load_many(list({lead.niche_id for lead in leads}))
    if _has(node, "runs"):
        await loaders.runs_by_lead.load_many(ids)
    if _has(node, "assignments"):
        groups = await loaders.assignments_by_lead.load_many(ids)
        await prefetch_assignments(
            info, [a for group in groups for a in group], _children(node, "assignments")
        )
