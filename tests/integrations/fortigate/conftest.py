"""Fixtures: a FortiGate simulator on a hand-driven clock, and the adapter wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from integrations.fortigate import FortiGateFirewall, FortiGateSettings, FortiGateSimulator, connect
from integrations.fortigate.sim import LAB_API_TOKEN


class Clock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = 1_760_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> FortiGateSimulator:
    return FortiGateSimulator(clock=clock)


def settings(**overrides: object) -> FortiGateSettings:
    values: dict[str, object] = {
        "base_url": FortiGateSimulator.base_url,
        "api_token": SecretStr(LAB_API_TOKEN),
    }
    values.update(overrides)
    return FortiGateSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def client(sim: FortiGateSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with connect(settings(), transport=sim.transport()) as http:
        yield http


@pytest.fixture
def firewall(client: httpx.AsyncClient) -> FortiGateFirewall:
    return FortiGateFirewall(client)
