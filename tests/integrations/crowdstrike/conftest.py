"""Fixtures: a CrowdStrike simulator with a movable clock, and adapters wired to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from integrations.crowdstrike import CrowdStrikeEDR, CrowdStrikeSettings, connect, lab_settings
from integrations.crowdstrike.sim import CrowdStrikeSimulator

SPECS = Path(__file__).resolve().parents[2] / "vendor_specs"
SAMPLES = SPECS / "samples" / "crowdstrike"


class FakeClock:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sample(name: str) -> dict[str, Any]:
    """One of the vendor's documented sample payloads."""
    payload: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return payload


def operation(category: str, method: str, path: str) -> dict[str, Any]:
    """The curated spec entry for a (category, method, path)."""
    for entry in json.loads((SPECS / "crowdstrike.operations.json").read_text()):
        if (entry["category"], entry["method"], entry["path"]) == (category, method, path):
            found: dict[str, Any] = entry
            return found
    raise LookupError((category, method, path))


def settings(**overrides: Any) -> CrowdStrikeSettings:
    """Lab settings, with fields replaced."""
    base = lab_settings().model_dump()
    base.update(overrides)
    if isinstance(base["client_secret"], str):
        base["client_secret"] = SecretStr(base["client_secret"])
    return CrowdStrikeSettings(**base)


@pytest.fixture
def sim_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(sim_clock: FakeClock) -> CrowdStrikeSimulator:
    return CrowdStrikeSimulator(settle_seconds=0.5, clock=sim_clock)


@pytest.fixture
async def client(
    sim: CrowdStrikeSimulator, client_clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    async with connect(lab_settings(), sim.transport(), clock=client_clock) as http:
        yield http


@pytest.fixture
def edr(client: httpx.AsyncClient) -> CrowdStrikeEDR:
    return CrowdStrikeEDR(client)
