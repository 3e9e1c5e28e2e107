"""Fixtures: a SentinelOne simulator, lab settings, and adapters wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from integrations.sentinelone import (
    SentinelOneAlerts,
    SentinelOneEDR,
    SentinelOneSettings,
    SentinelOneSimulator,
    connect,
    lab_settings,
)


@pytest.fixture
def sim() -> SentinelOneSimulator:
    return SentinelOneSimulator(settle_seconds=0.05)


@pytest.fixture
def settings() -> SentinelOneSettings:
    return lab_settings()


@pytest.fixture
async def client(
    sim: SentinelOneSimulator, settings: SentinelOneSettings
) -> AsyncIterator[httpx.AsyncClient]:
    async with connect(settings, transport=sim.transport()) as client:
        yield client


@pytest.fixture
def edr(client: httpx.AsyncClient) -> SentinelOneEDR:
    return SentinelOneEDR(client)


@pytest.fixture
def alerts(client: httpx.AsyncClient) -> SentinelOneAlerts:
    return SentinelOneAlerts(client, page_size=2)
