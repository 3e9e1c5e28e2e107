"""Fixtures: a Defender simulator, lab settings pointing at it, and adapters wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from integrations.defender import (
    DefenderAlerts,
    DefenderClient,
    DefenderEDR,
    DefenderSettings,
    DefenderSimulator,
    connect,
    lab_settings,
)

SETTLE = 0.05


@pytest.fixture
def sim() -> DefenderSimulator:
    return DefenderSimulator(settle_seconds=SETTLE)


@pytest.fixture
def settings() -> DefenderSettings:
    return lab_settings().model_copy(
        update={"action_poll_seconds": 0.01, "action_timeout_seconds": 2.0}
    )


@pytest.fixture
async def client(
    sim: DefenderSimulator, settings: DefenderSettings
) -> AsyncIterator[DefenderClient]:
    async with connect(settings, transport=sim.transport()) as client:
        yield client


@pytest.fixture
def edr(client: DefenderClient) -> DefenderEDR:
    return DefenderEDR(client)


@pytest.fixture
def alerts(client: DefenderClient) -> DefenderAlerts:
    return DefenderAlerts(client, page_size=3)
