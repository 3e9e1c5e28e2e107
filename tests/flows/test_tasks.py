"""Task-level rules: transient-only retries, the vendor's wait honoured, plans checked."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prefect.states import Completed, Failed

from flows.errors import PlanMismatch
from flows.models import Verdict
from flows.tasks import _honour_rate_limit, execute_action, retry_on_transient
from integrations.capabilities import ActionReceipt
from integrations.errors import (
    AuthError,
    NotFoundError,
    RateLimited,
    RejectedError,
    VendorTimeout,
    VendorUnavailable,
)
from tests.flows.factories import plan


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (VendorTimeout("t", vendor="x"), True),
        (VendorUnavailable("5xx", vendor="x", status_code=503), True),
        (RateLimited("429", vendor="x", retry_after=1.0), True),
        (AuthError("401", vendor="x", status_code=401), False),
        (AuthError("fortigate lockout", vendor="fortigate", status_code=429), False),
        (NotFoundError("404", vendor="x", status_code=404), False),
        (RejectedError("409", vendor="x", status_code=409), False),
        (PlanMismatch("hash"), False),
        (RuntimeError("bug"), False),
    ],
)
async def test_only_transient_errors_are_retried(error: Exception, retried: bool) -> None:
    """Given a task that failed with an error,
    When Prefect asks the retry condition,
    Then it retries timeouts, 429s and 5xx only (by type, never by message)."""
    state = Failed(data=error)
    assert await retry_on_transient(None, None, state) is retried  # type: ignore[arg-type]


async def test_a_completed_state_is_not_retried() -> None:
    """Given a completed state, When asked, Then there is nothing to retry."""
    assert await retry_on_transient(None, None, Completed(data=1)) is False  # type: ignore[arg-type]


async def test_rate_limit_wait_is_honoured_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given 429s asking for 2 s and for an hour,
    When the task honours them before re-raising,
    Then it sleeps the asked time, capped at a minute."""
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("flows.tasks.asyncio.sleep", fake_sleep)
    await _honour_rate_limit(RateLimited("429", vendor="okta", retry_after=2.0))
    await _honour_rate_limit(RateLimited("429", vendor="okta", retry_after=3600.0))
    await _honour_rate_limit(RateLimited("429", vendor="entra", retry_after=None))
    assert slept == [2.0, 60.0]


class _Recorder:
    vendor = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def contain_host(self, host_id: str, *, reason: str) -> ActionReceipt:
        self.calls.append(("contain_host", host_id))
        return ActionReceipt(
            verb="contain_host", target=host_id, vendor="fake", changed=True, state="contained"
        )


async def test_a_plan_that_is_not_the_approved_one_is_refused_before_any_call() -> None:
    """Given an approved hash and a different plan,
    When execute_action runs,
    Then PlanMismatch is raised and the adapter is never called."""
    adapter = _Recorder()
    started = time.perf_counter()
    with pytest.raises(PlanMismatch):
        await execute_action.fn(
            plan(target="aid-999"),
            plan().sha256,
            adapter,
            None,  # type: ignore[arg-type]
            verdict=Verdict.APPROVAL,
            approved_by=["cli:alice"],
        )
    assert adapter.calls == []
    assert time.perf_counter() - started < 1
