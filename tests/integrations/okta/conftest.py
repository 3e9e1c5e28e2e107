"""Fixtures for the Okta adapter tests: a simulator, clients wired to it in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr

from integrations.okta import OktaIdentity, OktaSettings, OktaSimulator, connect


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes requests to another transport and keeps each one, as sent on the wire."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return await self.inner.handle_async_request(request)


def ssws_settings(**overrides: object) -> OktaSettings:
    values: dict[str, object] = {
        "base_url": OktaSimulator.base_url,
        "api_token": SecretStr(OktaSimulator.LAB_API_TOKEN),
    }
    values.update(overrides)
    return OktaSettings(**values)  # type: ignore[arg-type]


def jwt_settings(**overrides: object) -> OktaSettings:
    values: dict[str, object] = {
        "base_url": OktaSimulator.base_url,
        "auth_mode": "private_key_jwt",
        "client_id": OktaSimulator.LAB_CLIENT_ID,
        "private_key_pem": SecretStr(OktaSimulator.LAB_PRIVATE_KEY_PEM),
        "key_id": OktaSimulator.LAB_KEY_ID,
    }
    values.update(overrides)
    return OktaSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_okta_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Settings read STANCH_OKTA_* from the environment; a developer's real org must not leak in.
    import os

    for name in list(os.environ):
        if name.startswith("STANCH_OKTA_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def sim() -> OktaSimulator:
    return OktaSimulator()


@pytest.fixture
def wire(sim: OktaSimulator) -> RecordingTransport:
    return RecordingTransport(sim.transport())


@pytest.fixture
async def client(wire: RecordingTransport) -> AsyncIterator[httpx.AsyncClient]:
    async with connect(ssws_settings(), wire) as c:
        yield c


@pytest.fixture
def idp(client: httpx.AsyncClient) -> OktaIdentity:
    return OktaIdentity(client)
