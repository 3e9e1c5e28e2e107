"""Blast-radius budgets: the declared window, and exactly ``max`` unattended under a race.

Incidents of one tenant run concurrently through handle-incident against a budget that has
room for fewer of them than there are: exactly ``max`` contain unattended, the others ask
for approval. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import create_async_engine

from flows.models import IncidentOutcome, Verdict, utcnow
from flows.record import BudgetClaimRow, Store, open_store
from flows.wiring import default_lab
from tests.flows import factories
from tests.flows.flowrun import deny, plan_for, run
from tests.postgres import PG_URL, pg_unreachable

pytestmark = pytest.mark.usefixtures("prefect_server")

MAX = 3
POLICY = f"""\
version: 1
tenant: budgeted
approvers:
  cli: true
  cli_users: ["*"]
actions:
  edr.contain_host:
    unattended_from: informational
    budget: {{max: {MAX}, per: 7d}}
"""


@pytest.fixture
def budgeted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tenant ``budgeted``: host isolation runs unattended, at most MAX a week."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "budgeted.yaml").write_text(POLICY)
    (policies / "default.yaml").write_text(POLICY.replace("tenant: budgeted\n", ""))
    monkeypatch.setenv("STANCH_POLICIES_DIR", str(policies))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh, empty store for the flows of one test: SQLite, or a PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'budgets.db'}"
        monkeypatch.setenv("STANCH_DATABASE_URL", url)
        yield url
        return
    problem = asyncio.run(pg_unreachable())
    if problem is not None:
        pytest.skip(problem)
    name = f"stanch_budget_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    monkeypatch.setenv("STANCH_DATABASE_URL", url)
    try:
        yield url
    finally:
        asyncio.run(_pg(f'DROP DATABASE "{name}" WITH (FORCE)'))


async def _pg(statement: str) -> None:
    admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await admin.dispose()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with open_store(store_url) as opened:
        yield opened


@pytest.mark.usefixtures("budgeted")
async def test_concurrent_incidents_past_a_budget_contain_exactly_max_unattended(
    store: Store,
) -> None:
    """Given a budget of MAX host isolations per 7 days, one of them spent 3 days ago,
    When MAX + 1 incidents of the tenant run at once (the analyst denies what is asked),
    Then exactly MAX - 1 hosts are isolated unattended (the old claim counts: the window
    is the declared 7 days) and every other isolation waited for approval."""
    default_lab().reset()
    old = plan_for(factories.incident(9300, tenant="budgeted"))
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(BudgetClaimRow).values(
                idempotency_key=old.idempotency_key,
                tenant="budgeted",
                action="edr.contain_host",
                incident_id=old.incident_id,
                claimed_at=utcnow() - timedelta(days=3),
            )
        )
    incidents = [factories.incident(9301 + i, tenant="budgeted") for i in range(MAX + 1)]
    outcomes = await asyncio.gather(*(run(i, store, deny) for i in incidents))
    verdicts = []
    for outcome, _ in outcomes:
        assert isinstance(outcome, IncidentOutcome), outcome
        # The incident's own host; those its hunt found are asked about by the playbook.
        [host] = [
            a
            for a in outcome.actions
            if a.plan.verb == "contain_host" and a.plan.target_label in outcome.incident.hostnames
        ]
        verdicts.append(host.verdict)
    assert verdicts.count(Verdict.UNATTENDED) == MAX - 1
    assert verdicts.count(Verdict.APPROVAL) == 2


async def test_reservations_racing_for_the_last_units_grant_exactly_max(store_url: str) -> None:
    """Given a budget of MAX and twenty plans of one tenant,
    When each reserves from its own connection pool at the same moment,
    Then exactly MAX are granted, and a plan that holds a claim keeps it."""
    async with open_store(store_url):
        pass  # migrated once, before the race
    plans = [plan_for(factories.incident(9400 + i, tenant="racing")) for i in range(20)]

    async def reserve(i: int) -> bool:
        async with open_store(store_url) as own:
            granted, _ = await own.reserve_budget(
                plans[i], max_count=MAX, window=timedelta(hours=1)
            )
            return granted

    granted = await asyncio.gather(*(reserve(i) for i in range(20)))
    assert granted.count(True) == MAX
    first = granted.index(True)
    async with open_store(store_url) as again:
        kept, _ = await again.reserve_budget(plans[first], max_count=MAX, window=timedelta(hours=1))
        assert kept
        assert await again.budget_spent("racing", "edr.contain_host", timedelta(hours=1)) == MAX
