"""Fixtures: a PAN-OS simulator on a hand-driven clock, and the adapter wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from integrations.panos import PanosFirewall, PanosSettings, PanosSimulator, connect
from integrations.panos.sim import LAB_API_KEY, LAB_PASSWORD, LAB_USERNAME


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
def sim(clock: Clock) -> PanosSimulator:
    return PanosSimulator(clock=clock)


def key_settings(**overrides: object) -> PanosSettings:
    """Settings with a fixed API key."""
    values: dict[str, object] = {
        "base_url": PanosSimulator.base_url,
        "api_key": SecretStr(LAB_API_KEY),
    }
    return PanosSettings(**(values | overrides))  # type: ignore[arg-type]


def login_settings(**overrides: object) -> PanosSettings:
    """Settings with keygen credentials and no key."""
    values: dict[str, object] = {
        "base_url": PanosSimulator.base_url,
        "username": LAB_USERNAME,
        "password": SecretStr(LAB_PASSWORD),
    }
    return PanosSettings(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
async def client(sim: PanosSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with connect(key_settings(), transport=sim.transport()) as http:
        yield http


@pytest.fixture
def firewall(client: httpx.AsyncClient) -> PanosFirewall:
    return PanosFirewall(client)
