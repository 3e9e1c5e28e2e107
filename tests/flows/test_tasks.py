"""Task-level rules: transient-only retries, the vendor's wait honoured, plans checked."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.states import Completed, Failed

from flows.errors import PlanMismatch
from flows.models import ActionStatus, Verdict
from flows.record import open_store
from flows.tasks import execute_action, find_user, rate_limit_wait, retry_on_transient
from integrations.capabilities import ActionReceipt, Capability
from integrations.defender import DefenderEDR, DefenderSimulator
from integrations.defender import connect as defender_connect
from integrations.defender import lab_settings as defender_lab_settings
from integrations.errors import (
    AuthError,
    NotFoundError,
    RateLimited,
    RejectedError,
    VendorTimeout,
    VendorUnavailable,
)
from integrations.fortigate import FortiGateFirewall, FortiGateSimulator
from integrations.fortigate import connect as fortigate_connect
from integrations.okta import OktaIdentity, OktaSimulator
from integrations.okta import connect as okta_connect
from tests.flows.factories import plan
from tests.integrations.fortigate.conftest import settings as fortigate_settings
from tests.integrations.okta.conftest import ssws_settings


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (VendorTimeout("t", vendor="x"), True),
        (VendorUnavailable("5xx", vendor="x", status_code=503), True),
        # A 429 is waited out and retried inside the task; Prefect adds no backoff on top.
        (RateLimited("429", vendor="x", retry_after=1.0), False),
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
    Then it retries timeouts and 5xx only (by type, never by message)."""
    state = Failed(data=error)
    assert await retry_on_transient(None, None, state) is retried  # type: ignore[arg-type]


async def test_a_completed_state_is_not_retried() -> None:
    """Given a completed state, When asked, Then there is nothing to retry."""
    assert await retry_on_transient(None, None, Completed(data=1)) is False  # type: ignore[arg-type]


def test_rate_limit_wait_is_what_the_vendor_asked_plus_small_jitter() -> None:
    """Given 429s asking for 2 s, for an hour, and saying nothing,
    When the wait is computed,
    Then it is the asked time plus at most 10 % jitter, capped at a minute, and
    exponential backoff when the vendor did not say."""
    for _ in range(50):
        assert 2.0 <= rate_limit_wait(RateLimited("429", vendor="okta", retry_after=2.0), 0) <= 2.2
        assert 60.0 <= rate_limit_wait(RateLimited("429", vendor="x", retry_after=3600.0), 0) <= 66
        assert 4.0 <= rate_limit_wait(RateLimited("429", vendor="s1", retry_after=None), 2) <= 4.4


async def test_a_429_costs_the_vendors_wait_not_that_plus_prefects_backoff(
    prefect_server: str,
) -> None:
    """Given Okta answering a lookup with 429 and X-Rate-Limit-Reset two seconds ahead,
    When the find_user task runs on the Prefect server,
    Then the next request arrives after what the header asked (plus at most 10 % and a
    little scheduling), not after that wait and Prefect's own retry backoff as well."""
    sim = OktaSimulator()
    sim.add_user("jdoe@acme.example")
    reset = math.ceil(time.time() + 2)
    sim.fail_next(
        1,
        status=429,
        headers={"X-Rate-Limit-Reset": str(reset), "X-Rate-Limit-Remaining": "0"},
        body=b'{"errorCode": "E0000047", "errorSummary": "API call exceeded rate limit"}',
        path_prefix="/api/v1/users",
    )
    async with okta_connect(ssws_settings(), transport=sim.transport()) as http:
        found = await find_user(OktaIdentity(http), "jdoe@acme.example")
    assert found is not None
    throttled, retried = sim.requests[0], sim.requests[1]
    assert (throttled.status, retried.status) == (429, 200)
    asked = reset - (time.time() - (time.monotonic() - throttled.at))
    gap = retried.at - throttled.at
    assert asked - 0.1 <= gap <= asked * 1.1 + 0.5, (gap, asked)


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


async def test_a_throttled_poll_after_the_isolation_does_not_disown_it(tmp_path: Path) -> None:
    """Given Defender accepting the isolation (201) and then throttling the adapter's first
    poll of that machine action (429 with Retry-After),
    When execute_action waits, calls again and the adapter finds the isolation in place,
    Then the action is recorded executed (this attempt's request did it), not already_done,
    and only one isolation was ever requested."""
    sim = DefenderSimulator(settle_seconds=0.1)
    machine = sim.add_host("ws-01")
    sim.throttle_next(1, wait=1.0, path_prefix="/api/machineactions/")
    contain = plan(target=machine, target_label="ws-01")
    polling = defender_lab_settings().model_copy(
        update={"action_poll_seconds": 0.01, "action_timeout_seconds": 2.0}
    )
    async with (
        open_store(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as store,
        defender_connect(polling, transport=sim.transport()) as http,
    ):
        result = await execute_action.fn(
            contain,
            contain.sha256,
            DefenderEDR(http),
            store,
            verdict=Verdict.UNATTENDED,
            approved_by=["policy:unattended"],
        )
    assert next(r.status for r in sim.requests if r.route == "/api/machineactions/{id}") == 429
    assert len([a for a in sim.actions.values() if a.type == "Isolate"]) == 1
    assert result.status == ActionStatus.EXECUTED


async def test_a_refused_pre_existing_state_stays_already_done(tmp_path: Path) -> None:
    """Given an address banned before stanch tried,
    When execute_action blocks it,
    Then it is already_done: no request of this incident could have caused the ban."""
    sim = FortiGateSimulator()
    block = plan(
        capability=Capability.FIREWALL,
        verb="block_ip",
        target="203.0.113.10",
        target_label="203.0.113.10",
        parameters={"ttl_seconds": 600, "reason": "r"},
    )
    async with (
        open_store(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as store,
        fortigate_connect(fortigate_settings(), transport=sim.transport()) as http,
    ):
        firewall = FortiGateFirewall(http)
        await firewall.block_ip("203.0.113.10", ttl_seconds=600, reason="an admin")
        result = await execute_action.fn(
            block,
            block.sha256,
            firewall,
            store,
            verdict=Verdict.UNATTENDED,
            approved_by=["policy:unattended"],
        )
    assert result.status == ActionStatus.ALREADY_DONE
