"""Fixtures wiring the Entra adapters to an in-process simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from integrations.entra import EntraIdentity, EntraRiskDetections, connect
from integrations.entra.sim import EntraSimulator
from tests.integrations.entra.support import lab


@pytest.fixture
def sim() -> EntraSimulator:
    return EntraSimulator()


@pytest.fixture
async def client(sim: EntraSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with connect(lab(), transport=sim.transport()) as c:
        yield c


@pytest.fixture
def identity(client: httpx.AsyncClient) -> EntraIdentity:
    return EntraIdentity(client)


@pytest.fixture
def detections(client: httpx.AsyncClient) -> EntraRiskDetections:
    return EntraRiskDetections(client)
