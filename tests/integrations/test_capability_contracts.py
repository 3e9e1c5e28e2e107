"""One contract per capability, run against every vendor plugin that serves it.

Each case wires the vendor's adapter to that vendor's own simulator in-process, exactly
as the wiring does: ``plugin.connect(plugin.lab_settings(), simulator.transport())``.
Two knobs are turned down so a case stays fast: a simulator's ``settle_seconds`` (how
long asynchronous containment stays pending) and a settings ``*_poll_seconds`` field
(how long an adapter waits between polls of a vendor action), wherever they exist.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from integrations.capabilities import (
    EDR,
    INVERSE_VERBS,
    ActionReceipt,
    AlertSource,
    Capability,
    Containment,
    Firewall,
    Host,
    IdentityProvider,
    ThreatIntel,
    UserAccount,
    UserStatus,
)
from integrations.errors import PermanentError, UnsupportedError
from integrations.plugin import VendorPlugin, available_plugins
from integrations.simkit import Simulator

PLUGINS = available_plugins()

PROTOCOLS: dict[Capability, type[Any]] = {
    Capability.EDR: EDR,
    Capability.IDENTITY: IdentityProvider,
    Capability.FIREWALL: Firewall,
    Capability.ALERTS: AlertSource,
    Capability.INTEL: ThreatIntel,
}

SETTLE_SECONDS = 0.05
POLL_SECONDS = 0.01
SETTLE_BUDGET = 5.0

HOSTNAME = "contract-host-01"
LOGIN = "contract.user@example.com"
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
BLOCK_IP = "203.0.113.9"


def cases(capability: Capability, xfail: dict[str, str] | None = None) -> list[Any]:
    """One pytest.param per plugin serving ``capability``, id = vendor name."""
    params = []
    for plugin in PLUGINS:
        if capability not in plugin.adapters:
            continue
        reason = (xfail or {}).get(plugin.name)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(plugin, id=plugin.name, marks=marks))
    return params


def adapter_cases() -> list[Any]:
    return [
        pytest.param(plugin, capability, id=f"{plugin.name}-{capability.value}")
        for plugin in PLUGINS
        for capability in plugin.adapters
    ]


def make_simulator(plugin: VendorPlugin) -> Simulator:
    """The vendor's simulator, with asynchronous state machines settling quickly."""
    params = inspect.signature(plugin.simulator).parameters
    kwargs: dict[str, Any] = {}
    if "settle_seconds" in params:
        kwargs["settle_seconds"] = SETTLE_SECONDS
    return plugin.simulator(**kwargs)


def make_settings(plugin: VendorPlugin) -> Any:
    """The vendor's lab settings, with any action-polling interval shortened."""
    settings = plugin.lab_settings()
    fast = {
        name: POLL_SECONDS for name in type(settings).model_fields if name.endswith("poll_seconds")
    }
    return settings.model_copy(update=fast) if fast else settings


@asynccontextmanager
async def wired(plugin: VendorPlugin, capability: Capability) -> AsyncIterator[tuple[Any, Any]]:
    """(simulator, adapter) for one vendor capability, the client closed afterwards."""
    sim = make_simulator(plugin)
    async with plugin.connect(make_settings(plugin), sim.transport()) as client:
        yield sim, plugin.adapters[capability](client)


def assert_requests_clean(sim: Simulator) -> None:
    """Every request the adapter made hit a simulator route and none got a 5xx."""
    assert sim.requests, "the scenario made no vendor request at all"
    unrouted = [r for r in sim.requests if r.route is None]
    failed = [r for r in sim.requests if r.status >= 500]
    assert unrouted == [], f"requests matching no simulator route: {unrouted}"
    assert failed == [], f"requests answered 5xx: {failed}"


def assert_receipt(
    receipt: object, plugin: VendorPlugin, verb: str, *, changed: bool, target: str | None = None
) -> None:
    assert isinstance(receipt, ActionReceipt)
    assert receipt.verb == verb
    assert receipt.vendor == plugin.name
    assert receipt.changed is changed, f"{verb}: expected changed={changed}, got {receipt}"
    if target is not None:
        assert receipt.target == target


async def settle_containment(edr: Any, host_id: str, wanted: Containment) -> Host:
    """Poll get_host until containment is ``wanted`` (or the budget runs out)."""
    deadline = time.monotonic() + SETTLE_BUDGET
    while True:
        host: Host = await edr.get_host(host_id)
        if host.containment is wanted or time.monotonic() >= deadline:
            return host
        await asyncio.sleep(SETTLE_SECONDS / 2)


@pytest.fixture(autouse=True)
def _no_vendor_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Settings read STANCH_<VENDOR>_* from the environment; a real tenant must not leak in.
    for name in list(os.environ):
        if name.startswith("STANCH_"):
            monkeypatch.delenv(name)
    yield


# Every capability --------------------------------------------------------------------------


def test_every_capability_has_at_least_one_vendor() -> None:
    """Given the installed plugins
    When they are grouped by capability
    Then EDR, identity, firewall and alerts each have a vendor to run the contracts on."""
    served = {cap for plugin in PLUGINS for cap in plugin.adapters}
    assert served == set(Capability)
    assert len(cases(Capability.EDR)) >= 1


@pytest.mark.parametrize(("plugin", "capability"), adapter_cases())
async def test_adapter_implements_protocol_and_names_its_vendor(
    plugin: VendorPlugin, capability: Capability
) -> None:
    """Given a vendor adapter built from its plugin
    When it is checked against the capability protocol
    Then it is an instance of it and its vendor is the plugin name."""
    async with wired(plugin, capability) as (_, adapter):
        assert isinstance(adapter, PROTOCOLS[capability])
        assert isinstance(adapter.vendor, str)
        assert adapter.vendor
        assert adapter.vendor == plugin.name


def _verbs(protocol: type[Any]) -> set[str]:
    return {
        name
        for name, member in vars(protocol).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    }


def test_inverse_verbs_are_symmetric() -> None:
    """Given INVERSE_VERBS
    When each verb's inverse is looked up
    Then the inverse's inverse is the verb itself."""
    for verb, inverse in INVERSE_VERBS.items():
        assert INVERSE_VERBS.get(inverse) == verb, (verb, inverse)


@pytest.mark.parametrize(("plugin", "capability"), adapter_cases())
def test_reversal_pairs_are_declared_and_implemented(
    plugin: VendorPlugin, capability: Capability
) -> None:
    """Given a capability protocol and a vendor's adapter class for it
    When the protocol declares a verb named in INVERSE_VERBS
    Then the protocol declares its inverse too, and the adapter implements both."""
    protocol = PROTOCOLS[capability]
    declared = _verbs(protocol)
    reversible = declared & set(INVERSE_VERBS)
    if capability not in (Capability.ALERTS, Capability.INTEL):  # read-only capabilities
        assert reversible, f"{protocol.__name__} declares no reversible verb"
    adapter_class = plugin.adapters[capability]
    for verb in reversible:
        inverse = INVERSE_VERBS[verb]
        assert inverse in declared, f"{protocol.__name__} has {verb} but not {inverse}"
        for name in (verb, inverse):
            assert inspect.iscoroutinefunction(getattr(adapter_class, name, None)), (
                f"{adapter_class.__name__}.{name} is not an async method"
            )


# EDR -------------------------------------------------------------------------------------


@pytest.mark.parametrize("plugin", cases(Capability.EDR))
async def test_edr_find_and_get_host(plugin: VendorPlugin) -> None:
    """Given a host seeded in the vendor's simulator
    When it is found by hostname, an unknown name is looked up, and it is read by id
    Then find_host returns it, the unknown name gives None, and get_host round-trips."""
    async with wired(plugin, Capability.EDR) as (sim, edr):
        host_id = sim.add_host(HOSTNAME)

        found = await edr.find_host(HOSTNAME)
        assert isinstance(found, Host)
        assert found.hostname == HOSTNAME
        assert found.id == host_id
        assert found.vendor == plugin.name
        assert found.containment is Containment.NORMAL

        assert await edr.find_host("no-such-host-404") is None

        again = await edr.get_host(found.id)
        assert isinstance(again, Host)
        assert again.id == found.id
        assert again.hostname == HOSTNAME
    assert_requests_clean(sim)


@pytest.mark.parametrize("plugin", cases(Capability.EDR))
async def test_edr_contain_and_release_host(plugin: VendorPlugin) -> None:
    """Given a seeded host in normal state
    When it is contained twice, then released
    Then the first contain changes it and it settles CONTAINED, the second changes
    nothing, and release changes it back until it settles NORMAL."""
    async with wired(plugin, Capability.EDR) as (sim, edr):
        host_id = sim.add_host(HOSTNAME)

        first = await edr.contain_host(host_id, reason="contract: contain")
        assert_receipt(first, plugin, "contain_host", changed=True, target=host_id)
        host = await settle_containment(edr, host_id, Containment.CONTAINED)
        assert host.containment is Containment.CONTAINED

        second = await edr.contain_host(host_id, reason="contract: contain again")
        assert_receipt(second, plugin, "contain_host", changed=False, target=host_id)
        assert (await edr.get_host(host_id)).containment is Containment.CONTAINED

        released = await edr.release_host(host_id, reason="contract: release")
        assert_receipt(released, plugin, "release_host", changed=True, target=host_id)
        host = await settle_containment(edr, host_id, Containment.NORMAL)
        assert host.containment is Containment.NORMAL
    assert_requests_clean(sim)


@pytest.mark.parametrize("plugin", cases(Capability.EDR))
async def test_edr_block_and_unblock_hash_are_idempotent(plugin: VendorPlugin) -> None:
    """Given a valid SHA-256 nobody has blocked
    When it is blocked twice and unblocked twice
    Then each verb changes state the first time and not the second."""
    async with wired(plugin, Capability.EDR) as (sim, edr):
        block = [await edr.block_hash(SHA256, reason="contract: block") for _ in range(2)]
        assert_receipt(block[0], plugin, "block_hash", changed=True)
        assert_receipt(block[1], plugin, "block_hash", changed=False)
        assert block[0].target.lower() == SHA256

        unblock = [await edr.unblock_hash(SHA256) for _ in range(2)]
        assert_receipt(unblock[0], plugin, "unblock_hash", changed=True)
        assert_receipt(unblock[1], plugin, "unblock_hash", changed=False)
    assert_requests_clean(sim)


@pytest.mark.parametrize("plugin", cases(Capability.EDR))
@pytest.mark.parametrize(
    "bad", ["not-a-hash", "z" * 64, SHA256[:-1]], ids=["word", "non-hex", "63"]
)
async def test_edr_invalid_sha256_is_a_permanent_error(plugin: VendorPlugin, bad: str) -> None:
    """Given a value that is not a SHA-256
    When block_hash is called with it
    Then a PermanentError (IntegrationError subclass) naming the vendor is raised."""
    async with wired(plugin, Capability.EDR) as (sim, edr):
        with pytest.raises(PermanentError) as exc:
            await edr.block_hash(bad, reason="contract: invalid")
        assert exc.value.vendor == plugin.name
    assert all(r.route is not None and r.status < 500 for r in sim.requests)


# Identity --------------------------------------------------------------------------------


@pytest.mark.parametrize("plugin", cases(Capability.IDENTITY))
async def test_identity_find_user(plugin: VendorPlugin) -> None:
    """Given a user seeded in the vendor's simulator
    When it is found by login, and an unknown login is looked up
    Then the first is an ACTIVE UserAccount with that login, the second None."""
    async with wired(plugin, Capability.IDENTITY) as (sim, idp):
        user_id = sim.add_user(LOGIN)

        user = await idp.find_user(LOGIN)
        assert isinstance(user, UserAccount)
        assert user.id == user_id
        assert user.login == LOGIN
        assert user.vendor == plugin.name
        assert user.status is UserStatus.ACTIVE

        assert await idp.find_user("nobody.404@example.com") is None
    assert_requests_clean(sim)


@pytest.mark.parametrize("plugin", cases(Capability.IDENTITY))
async def test_identity_suspend_and_unsuspend_are_idempotent(plugin: VendorPlugin) -> None:
    """Given an active seeded user
    When they are suspended twice and unsuspended twice
    Then each verb changes state the first time only, and the user ends ACTIVE."""
    async with wired(plugin, Capability.IDENTITY) as (sim, idp):
        user_id = sim.add_user(LOGIN)

        suspend = [await idp.suspend_user(user_id, reason="contract") for _ in range(2)]
        assert_receipt(suspend[0], plugin, "suspend_user", changed=True, target=user_id)
        assert_receipt(suspend[1], plugin, "suspend_user", changed=False, target=user_id)
        assert (await idp.get_user(user_id)).status is not UserStatus.ACTIVE

        unsuspend = [await idp.unsuspend_user(user_id, reason="contract") for _ in range(2)]
        assert_receipt(unsuspend[0], plugin, "unsuspend_user", changed=True, target=user_id)
        assert_receipt(unsuspend[1], plugin, "unsuspend_user", changed=False, target=user_id)
        assert (await idp.get_user(user_id)).status is UserStatus.ACTIVE
    assert_requests_clean(sim)


@pytest.mark.parametrize("plugin", cases(Capability.IDENTITY))
async def test_identity_suspended_user_reads_suspended(plugin: VendorPlugin) -> None:
    """Given an active seeded user
    When they are suspended
    Then get_user and find_user report status SUSPENDED."""
    async with wired(plugin, Capability.IDENTITY) as (sim, idp):
        user_id = sim.add_user(LOGIN)
        await idp.suspend_user(user_id, reason="contract")

        assert (await idp.get_user(user_id)).status is UserStatus.SUSPENDED
        found = await idp.find_user(LOGIN)
        assert found is not None
        assert found.status is UserStatus.SUSPENDED
    assert_requests_clean(sim)


@pytest.mark.parametrize("plugin", cases(Capability.IDENTITY))
async def test_identity_containment_verbs_return_receipts(plugin: VendorPlugin) -> None:
    """Given an active seeded user
    When sessions are revoked, factors reset and the password expired
    Then each returns a receipt with its own verb for that user. A vendor may instead
    raise UnsupportedError for one of these optional verbs; the contract accepts that
    (none of the current vendors does, and the error must still name the vendor)."""
    async with wired(plugin, Capability.IDENTITY) as (sim, idp):
        user_id = sim.add_user(LOGIN)
        done = []
        for verb in ("revoke_sessions", "reset_factors", "expire_password"):
            try:
                receipt = await getattr(idp, verb)(user_id)
            except UnsupportedError as exc:
                assert exc.vendor == plugin.name
                continue
            assert isinstance(receipt, ActionReceipt)
            assert receipt.verb == verb
            assert receipt.vendor == plugin.name
            assert receipt.target == user_id
            done.append(verb)
        assert done, "every optional identity verb was unsupported"
    assert_requests_clean(sim)


# Firewall --------------------------------------------------------------------------------


@pytest.mark.parametrize("plugin", cases(Capability.FIREWALL))
async def test_firewall_block_list_unblock(plugin: VendorPlugin) -> None:
    """Given an address the firewall does not block
    When it is blocked twice, listed, unblocked twice and listed again
    Then block and unblock change state the first time only, and the list shows it
    while blocked and not after."""
    async with wired(plugin, Capability.FIREWALL) as (sim, firewall):
        block = [
            await firewall.block_ip(BLOCK_IP, ttl_seconds=3600, reason="contract: block")
            for _ in range(2)
        ]
        assert_receipt(block[0], plugin, "block_ip", changed=True, target=BLOCK_IP)
        assert_receipt(block[1], plugin, "block_ip", changed=False, target=BLOCK_IP)

        listed = await firewall.list_blocked()
        assert BLOCK_IP in [b.ip for b in listed]
        assert all(b.vendor == plugin.name for b in listed)

        unblock = [await firewall.unblock_ip(BLOCK_IP) for _ in range(2)]
        assert_receipt(unblock[0], plugin, "unblock_ip", changed=True, target=BLOCK_IP)
        assert_receipt(unblock[1], plugin, "unblock_ip", changed=False, target=BLOCK_IP)

        assert BLOCK_IP not in [b.ip for b in await firewall.list_blocked()]
    assert_requests_clean(sim)


@pytest.mark.parametrize("plugin", cases(Capability.FIREWALL))
@pytest.mark.parametrize("bad", ["not-an-ip", "999.1.2.3", "203.0.113.0/24"])
async def test_firewall_invalid_ip_is_a_permanent_error(plugin: VendorPlugin, bad: str) -> None:
    """Given a value that is not a single IP address
    When block_ip and unblock_ip are called with it
    Then each raises PermanentError naming the vendor."""
    async with wired(plugin, Capability.FIREWALL) as (sim, firewall):
        with pytest.raises(PermanentError) as exc:
            await firewall.block_ip(bad, ttl_seconds=3600, reason="contract: invalid")
        assert exc.value.vendor == plugin.name
        with pytest.raises(PermanentError):
            await firewall.unblock_ip(bad)
    assert all(r.route is not None and r.status < 500 for r in sim.requests)
