"""Fixtures for the Slack tests: a running FakeSlack and a WebClient pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk import WebClient

from integrations.slack import SlackChat
from integrations.slack.fake import FakeSlack
from tests.integrations.slack.factories import CHANNEL


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        yield slack


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token=fake.token, base_url=fake.base_url, timeout=5)


@pytest.fixture
def chat(client: WebClient, fake: FakeSlack) -> SlackChat:
    return SlackChat(client, channel=CHANNEL, response_url_prefixes=(fake.origin + "/response/",))
