"""Hypothesis stateful test: the same random operations on the real engine (PostgreSQL) and on the
reference model, one at a time; every distribution must choose the same providers at the same
levels for the same prices, and every balance must match."""

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from app.db import Database, create_database
from app.engine.distribute import distribute_lead
from app.models.caps import CapPeriod
from app.services import billing, caps, leads, niches, subscriptions
from app.services.audit import SYSTEM
from app.services.caps import CapLimit
from tests.conftest import TABLES
from tests.model.reference import DAYS, MCap, MLevel, Model, MProvider, MSub, blackout_around

FILTERS = [
    [],
    [{"field": "state", "op": "in", "value": ["TX", "OK"]}],
    [{"field": "zip", "op": "prefix", "value": "75"}],
    [{"field": "score", "op": "gte", "value": 50}],
    [{"field": "state", "op": "neq", "value": "CA"}, {"field": "vip", "op": "exists"}],
]
ALL_DAY = {"days": DAYS, "from": "00:00", "to": "24:00"}
SCHEDULES: list[dict[str, Any] | None] = [
    None,
    {"windows": [ALL_DAY]},
    {"windows": [{"days": DAYS, "from": "08:00", "to": "20:00"}]},
    {"windows": [{"days": DAYS, "from": "20:00", "to": "08:00"}]},  # across midnight
    {"windows": [ALL_DAY], "blackoutDates": blackout_around(datetime.now(UTC).date())},
]
# coarse prices and spend caps, so a spend cap is often reached to the cent
PRICES = st.sampled_from([0, 250, 500, 750, 1000, 2000])
ZONES = ["UTC", "America/Chicago", "Asia/Kolkata", "Pacific/Kiritimati"]
ATTRIBUTES = st.fixed_dictionaries(
    {"state": st.sampled_from(["TX", "OK", "CA"]), "zip": st.sampled_from(["75001", "90210"])},
    optional={"score": st.integers(0, 100), "vip": st.just(True)},
)


def make_machine(database_url: str) -> type[RuleBasedStateMachine]:
    class EngineVersusModel(RuleBasedStateMachine):
        # choices are drawn from lists in creation order: ids come from the database and differ
        # on every replay, and hypothesis replays draws
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.db: Database = create_database(database_url, pool_size=2)
            self.model: Model | None = None
            self.niche_id: uuid.UUID | None = None

        def run(self, coro: Any) -> Any:
            return self.loop.run_until_complete(coro)

        def teardown(self) -> None:
            self.run(self.db.dispose())
            self.loop.close()

        @initialize(
            strategy=st.sampled_from(["ALL_LEVELS", "FIRST_MATCH"]),
            levels=st.lists(st.tuples(PRICES, st.integers(1, 3)), min_size=1, max_size=4),
            balances=st.lists(st.integers(0, 20_000), min_size=3, max_size=7),
            # every provider subscribes to every level; a filter for some (pick >= len(FILTERS): none)
            filter_picks=st.lists(st.integers(0, 2 * len(FILTERS)), min_size=28, max_size=28),
        )
        def start(
            self, strategy: str, levels: list[tuple[int, int]], balances: list[int], filter_picks: list[int]
        ) -> None:
            """A populated niche to start from: levels, funded providers, filtered subscriptions."""

            async def go() -> uuid.UUID:
                async with self.db.engine.begin() as conn:
                    await conn.exec_driver_sql(f"TRUNCATE {TABLES} CASCADE")
                niche = await niches.create_niche(self.db, actor=SYSTEM, name="M", level_strategy=strategy)
                return niche.id

            self.niche_id = self.run(go())
            model = self.model = Model(strategy=strategy)
            for price, max_recipients in levels:
                self.add_level(price, max_recipients)
            for balance in balances:
                self.add_provider(balance)
            level_ids = sorted(model.levels, key=lambda i: model.levels[i].position)
            pairs = [(p, lv) for p in list(model.providers) for lv in level_ids]
            for n, (provider_id, level_id) in enumerate(pairs):
                pick = filter_picks[n % len(filter_picks)]
                self._subscribe(provider_id, level_id, pick if pick < len(FILTERS) else 0)

        def _subscribe(self, provider: uuid.UUID, level: uuid.UUID, filters: int) -> None:
            assert self.model is not None
            if any(s.provider == provider and s.level == level for s in self.model.subs.values()):
                return
            sub = self.run(
                billing.subscribe(
                    self.db,
                    actor=SYSTEM,
                    provider_id=provider,
                    competition_level_id=level,
                    filters=FILTERS[filters],
                )
            )
            self.model.subs[sub.id] = MSub(sub.id, provider, level, FILTERS[filters])

        @rule(price=PRICES, max_recipients=st.integers(1, 3))
        def add_level(self, price: int, max_recipients: int) -> None:
            assert self.model is not None and self.niche_id is not None
            level = self.run(
                niches.create_level(
                    self.db,
                    actor=SYSTEM,
                    niche_id=self.niche_id,
                    name="L",
                    price_cents=price,
                    max_recipients=max_recipients,
                )
            )
            self.model.levels[level.id] = MLevel(level.id, level.order_position, price, max_recipients)

        @precondition(lambda self: self.model is not None and self.model.levels)
        @rule(data=st.data())
        def toggle_level(self, data: st.DataObject) -> None:
            assert self.model is not None
            level = data.draw(st.sampled_from(list(self.model.levels.values())))
            level.active = not level.active
            self.run(niches.update_level(self.db, actor=SYSTEM, level_id=level.id, active=level.active))

        @rule(balance=st.integers(0, 20_000))
        def add_provider(self, balance: int) -> None:
            assert self.model is not None
            n = len(self.model.providers)
            p = self.run(billing.create_provider(self.db, actor=SYSTEM, name=f"P{n}", email=f"p{n}@m.test"))
            if balance:
                self.run(
                    billing.top_up(
                        self.db, actor=SYSTEM, provider_id=p.id, amount_cents=balance, reference="r0"
                    )
                )
            self.model.providers[p.id] = MProvider(p.id, balance)

        @precondition(lambda self: self.model is not None and self.model.providers and self.model.levels)
        @rule(data=st.data(), filters=st.sampled_from(range(len(FILTERS))))
        def subscribe(self, data: st.DataObject, filters: int) -> None:
            assert self.model is not None
            provider = data.draw(st.sampled_from(list(self.model.providers)))
            level = data.draw(st.sampled_from(list(self.model.levels)))
            self._subscribe(provider, level, filters)

        @precondition(lambda self: self.model is not None and self.model.subs)
        @rule(data=st.data())
        def toggle_pause(self, data: st.DataObject) -> None:
            assert self.model is not None
            sub = self.model.subs[data.draw(st.sampled_from(list(self.model.subs)))]
            sub.paused = not sub.paused
            change = billing.pause_subscription if sub.paused else billing.resume_subscription
            self.run(change(self.db, actor=SYSTEM, subscription_id=sub.id))

        @precondition(lambda self: self.model is not None and self.model.providers)
        @rule(data=st.data(), amount=st.integers(1, 3000))
        def top_up(self, data: st.DataObject, amount: int) -> None:
            assert self.model is not None
            provider = self.model.providers[data.draw(st.sampled_from(list(self.model.providers)))]
            provider.balance += amount
            self.run(
                billing.top_up(
                    self.db,
                    actor=SYSTEM,
                    provider_id=provider.id,
                    amount_cents=amount,
                    reference=str(uuid.uuid4()),
                )
            )

        @precondition(lambda self: self.model is not None and self.model.providers)
        @rule(data=st.data())
        def toggle_suspension(self, data: st.DataObject) -> None:
            from app.models.billing import ProviderStatus

            assert self.model is not None
            provider = self.model.providers[data.draw(st.sampled_from(list(self.model.providers)))]
            provider.suspended = not provider.suspended
            status = ProviderStatus.SUSPENDED if provider.suspended else ProviderStatus.ACTIVE
            self.run(
                billing.set_provider_status(self.db, actor=SYSTEM, provider_id=provider.id, status=status)
            )

        @precondition(lambda self: self.model is not None and self.model.providers)
        @rule(data=st.data(), timezone=st.sampled_from(ZONES))
        def set_timezone(self, data: st.DataObject, timezone: str) -> None:
            assert self.model is not None
            provider = self.model.providers[data.draw(st.sampled_from(list(self.model.providers)))]
            provider.timezone = timezone
            self.run(caps.set_timezone(self.db, actor=SYSTEM, provider_id=provider.id, timezone=timezone))

        @precondition(lambda self: self.model is not None and self.model.subs)
        @rule(
            data=st.data(),
            provider_wide=st.booleans(),
            limits=st.lists(
                st.tuples(
                    st.sampled_from(list(CapPeriod)),
                    st.one_of(st.none(), st.integers(0, 4)),
                    st.one_of(st.none(), st.integers(0, 20).map(lambda n: n * 250)),
                ).filter(lambda t: t[1] is not None or t[2] is not None),
                max_size=3,
                unique_by=lambda t: t[0],
            ),
        )
        def set_caps(
            self,
            data: st.DataObject,
            provider_wide: bool,
            limits: list[tuple[CapPeriod, int | None, int | None]],
        ) -> None:
            assert self.model is not None
            sub = self.model.subs[data.draw(st.sampled_from(list(self.model.subs)))]
            scope = None if provider_wide else sub.id
            self.model.caps = [
                c for c in self.model.caps if not (c.provider == sub.provider and c.subscription == scope)
            ] + [MCap(sub.provider, scope, period, leads_, spend) for period, leads_, spend in limits]
            wanted = [CapLimit(period, leads_, spend) for period, leads_, spend in limits]
            if provider_wide:
                self.run(caps.set_caps(self.db, actor=SYSTEM, provider_id=sub.provider, caps=wanted))
            else:
                self.run(caps.set_caps(self.db, actor=SYSTEM, subscription_id=sub.id, caps=wanted))

        @precondition(lambda self: self.model is not None and self.model.subs)
        @rule(data=st.data(), pick=st.sampled_from(range(len(SCHEDULES) + 3)))
        def set_schedule(self, data: st.DataObject, pick: int) -> None:
            assert self.model is not None
            sub = self.model.subs[data.draw(st.sampled_from(list(self.model.subs)))]
            if pick < len(SCHEDULES):
                sub.schedule = SCHEDULES[pick]
            else:  # one weekday only, counted from the provider's local today: -1, 0 or +1
                local = datetime.now(ZoneInfo(self.model.providers[sub.provider].timezone))
                day = DAYS[(local.weekday() + pick - len(SCHEDULES) - 1) % 7]
                window = (
                    {"days": [day], "from": "20:00", "to": "08:00"}
                    if day != DAYS[local.weekday()]
                    else ALL_DAY
                )
                sub.schedule = {"windows": [{**window, "days": [day]}]}
            self.run(
                subscriptions.set_schedule(
                    self.db, actor=SYSTEM, subscription_id=sub.id, schedule=sub.schedule
                )
            )

        @precondition(lambda self: self.model is not None)
        @rule(batch=st.lists(ATTRIBUTES, min_size=1, max_size=4))
        def distribute(self, batch: list[dict[str, Any]]) -> None:
            for attributes in batch:
                self._distribute_one(attributes)

        @precondition(lambda self: self.model is not None)
        @rule(attributes=ATTRIBUTES)
        def distribute_again(self, attributes: dict[str, Any]) -> None:  # distributions twice as likely
            self._distribute_one(attributes)

        def _distribute_one(self, attributes: dict[str, Any]) -> None:
            assert self.model is not None and self.niche_id is not None

            async def go() -> list[tuple[uuid.UUID, uuid.UUID, int]]:
                lead = await leads.submit_lead(
                    self.db, actor=SYSTEM, niche_id=self.niche_id, attributes=attributes
                )
                await leads.approve_lead(self.db, actor=SYSTEM, lead_id=lead.id)
                result = await distribute_lead(self.db, lead_id=lead.id)
                return [(a.level_id, a.provider_id, a.price_cents) for a in result.assigned]

            now = datetime.now(UTC)
            assert self.run(go()) == self.model.distribute(attributes, now)

        @invariant()
        def balances_match(self) -> None:
            if self.model is None or not self.model.providers:
                return

            async def go() -> dict[uuid.UUID, int]:
                async with self.db.engine.connect() as conn:
                    rows = await conn.exec_driver_sql("SELECT id, balance_cents FROM providers")
                    return {r[0]: r[1] for r in rows}

            assert self.run(go()) == {p.id: p.balance for p in self.model.providers.values()}

    return EngineVersusModel


def test_engine_matches_the_reference_model(database_url: str) -> None:
    machine = make_machine(database_url)
    machine.TestCase.settings = settings(
        max_examples=25, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
    )
    machine.TestCase().runTest()
