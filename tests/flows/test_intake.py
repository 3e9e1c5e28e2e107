"""Alert intake: fingerprints, de-duplication, correlation, triage and dead letters."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from flows.detect import (
    EntityKind,
    Intake,
    TriagePolicy,
    UnknownSource,
    entity_keys,
    fingerprint,
    normalise,
)
from flows.models import Incident
from flows.record import AlertRow, CaseBook, IncidentRow, Store
from integrations.ocsf import DetectionFinding
from tests.postgres import BACKENDS, backend_store

SAMPLES = Path(__file__).parents[1] / "vendor_specs" / "samples"
NOW = datetime.now(UTC)
T0 = int((NOW - timedelta(minutes=30)).timestamp() * 1000)
SHA = hashlib.sha256(b"malware").hexdigest()


def alert(
    uid: str,
    *,
    at: int = T0,
    severity: int = 4,
    host: str | None = None,
    user: str | None = None,
    sha256: str | None = None,
    ip: str | None = None,
) -> dict[str, Any]:
    """An OCSF Detection Finding naming the given entities."""
    evidence: dict[str, Any] = {}
    if sha256 or user:
        process: dict[str, Any] = {"name": "x.exe"}
        if sha256:
            process["file"] = {"name": "x.exe", "hashes": [{"algorithm_id": 3, "value": sha256}]}
        if user:
            process["user"] = {"name": user}
        evidence["process"] = process
    if ip:
        evidence["dst_endpoint"] = {"ip": ip}
    finding: dict[str, Any] = {
        "class_uid": 2004,
        "category_uid": 2,
        "activity_id": 1,
        "type_uid": 200401,
        "severity_id": severity,
        "time": at,
        "metadata": {"version": "1.8.0", "product": {"name": "Test EDR", "uid": "test"}},
        "finding_info": {"uid": uid, "title": f"alert {uid}"},
        "evidences": [evidence] if evidence else [],
    }
    if host:
        finding["device"] = {"hostname": host}
    return finding


class Starts:
    """A start_incident callback that records what it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.incidents: list[Incident] = []
        self.fail = fail

    async def __call__(self, incident: Incident) -> None:
        if self.fail:
            raise RuntimeError("Prefect API down")
        self.incidents.append(incident)

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.incidents]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store on SQLite, and on PostgreSQL when one is reachable."""
    async with backend_store(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
def starts() -> Starts:
    return Starts()


@pytest.fixture
def intake(store: Store, starts: Starts) -> Intake:
    return Intake(store, start_incident=starts, refresh_seconds=0)


async def count(store: Store, model: Any) -> int:
    async with store.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(model)) or 0)


# Fingerprints -------------------------------------------------------------------------------
def test_fingerprint_is_the_product_and_uid_when_there_is_a_uid() -> None:
    """Given the same alert re-sent with a new status and keys in another order, and the
    same alert arriving by another channel (a poller's OCSF instead of the vendor webhook),
    When fingerprinted, Then the fingerprint is the same; another product or uid differs."""
    first = DetectionFinding.model_validate(alert("A-1", host="WS-1"))
    resent_payload = dict(reversed(list(alert("A-1", host="WS-1", severity=5).items())))
    resent = DetectionFinding.model_validate({**resent_payload, "status_id": 2})
    assert fingerprint("ocsf", first) == fingerprint("ocsf", resent)
    assert len(fingerprint("ocsf", first)) == 64
    assert fingerprint("crowdstrike", first) == fingerprint("ocsf", first)
    product = first.metadata.product.model_copy(update={"uid": "other-product"})
    elsewhere = first.model_copy(
        update={"metadata": first.metadata.model_copy(update={"product": product})}
    )
    assert fingerprint("ocsf", elsewhere) != fingerprint("ocsf", first)
    other = DetectionFinding.model_validate(alert("A-2", host="WS-1"))
    assert fingerprint("ocsf", other) != fingerprint("ocsf", first)


def test_fingerprint_hashes_the_content_when_the_uid_is_a_placeholder() -> None:
    """Given findings whose uid is a placeholder, When fingerprinted,
    Then equal content (in any key order) gives one fingerprint and other content another."""
    a = DetectionFinding.model_validate(alert("unknown", host="WS-1"))
    dashed = alert("unknown", host="WS-1")
    dashed["finding_info"]["uid"] = "-"
    b = DetectionFinding.model_validate(dict(reversed(list(dashed.items()))))
    later = DetectionFinding.model_validate(alert("unknown", host="WS-1", at=T0 + 1))
    assert fingerprint("ocsf", a) == fingerprint("ocsf", b)
    assert fingerprint("ocsf", a) != fingerprint("ocsf", later)


def test_entity_keys_are_normalised() -> None:
    """Given an alert naming an FQDN, a DOMAIN\\user, an upper-case hash, a private and a
    public IP, When its entity keys are taken, Then they are short, lower-case and public."""
    finding = DetectionFinding.model_validate(
        alert("k", host="WS-1.corp.example", user="ACME\\JDoe", sha256=SHA.upper(), ip="10.0.0.1")
        | {"observables": [{"type_id": 2, "value": "203.0.113.9"}]}
    )
    assert entity_keys(finding) == [
        (EntityKind.HOST, "ws-1"),
        (EntityKind.USER, "jdoe"),
        (EntityKind.HASH, SHA),
        (EntityKind.IP, "203.0.113.9"),
    ]


# Normalisation ------------------------------------------------------------------------------
def test_normalise_uses_the_vendor_normaliser_and_names_the_failing_field() -> None:
    """Given a CrowdStrike sample alert and one without its composite_id,
    When normalised as crowdstrike, Then the first is a finding and the second is
    rejected naming composite_id; an unknown source is refused."""
    body = json.loads((SAMPLES / "crowdstrike" / "alerts_v2_entities_response.json").read_text())
    sample = body["resources"][0]
    assert normalise("crowdstrike", sample).uid == sample["composite_id"]
    from flows.errors import AlertRejected

    with pytest.raises(AlertRejected) as rejected:
        normalise("crowdstrike", {k: v for k, v in sample.items() if k != "composite_id"})
    assert rejected.value.field == "composite_id"
    with pytest.raises(UnknownSource):
        normalise("splunk", sample)


# De-duplication -----------------------------------------------------------------------------
async def test_duplicates_are_stored_once_within_and_across_batches_and_restarts(
    store: Store, starts: Starts, tmp_path: Path
) -> None:
    """Given an alert sent twice in one batch, again in a second batch and again after
    the intake restarts, When ingested, Then it is stored once and counted as duplicate
    three times."""
    intake = Intake(store, start_incident=starts)
    first = await intake.ingest("acme", "ocsf", [alert("D-1", host="WS-1")] * 2)
    second = await intake.ingest("acme", "ocsf", [alert("D-1", host="WS-1")])
    restarted = Intake(store, start_incident=starts)
    third = await restarted.ingest("acme", "ocsf", [alert("D-1", host="WS-1")])
    assert (first.accepted, first.duplicates) == (1, 1)
    assert (second.accepted, second.duplicates) == (0, 1)
    assert (third.accepted, third.duplicates) == (0, 1)
    assert await count(store, AlertRow) == 1
    assert await count(store, IncidentRow) == 1
    assert len(starts.incidents) == 1


async def test_two_intakes_sharing_a_store_race_without_loss_or_double_ids(
    store: Store,
) -> None:
    """Given two intakes on one store (two `stanch serve` replicas), each handed a batch at
    the same moment with one alert in common and one of its own, on hosts unrelated
    to each other,
    When both ingest, Then the shared alert is stored once (accepted by one, a duplicate
    for the other), every alert is kept, and the incidents get distinct ids that are all
    stored, whichever intake lost the race for the first id."""
    first, second = Starts(), Starts()
    a = Intake(store, start_incident=first, refresh_seconds=0)
    b = Intake(store, start_incident=second, refresh_seconds=0)
    ra, rb = await asyncio.gather(
        a.ingest("acme", "ocsf", [alert("R-1", host="WS-1"), alert("R-2", host="WS-9")]),
        b.ingest("acme", "ocsf", [alert("R-1", host="WS-1"), alert("R-3", host="WS-5")]),
    )
    assert await count(store, AlertRow) == 3
    assert (ra.accepted + rb.accepted, ra.duplicates + rb.duplicates) == (3, 1)
    ids = first.ids + second.ids
    assert len(ids) == len(set(ids)) == 3
    for incident_id in ids:
        assert await store.get_incident(incident_id) is not None


async def test_the_same_uid_in_two_tenants_is_two_alerts(intake: Intake, store: Store) -> None:
    """Given one uid sent by two tenants, When ingested, Then each tenant keeps its alert."""
    await intake.ingest("acme", "ocsf", [alert("T-1", host="WS-1")])
    other = await intake.ingest("globex", "ocsf", [alert("T-1", host="WS-1")])
    assert (other.accepted, other.new_incidents) == (1, 1)
    assert await count(store, AlertRow) == 2


# Correlation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shared",
    [{"host": "WS-7"}, {"user": "jdoe@acme.example"}, {"sha256": SHA}, {"ip": "203.0.113.66"}],
    ids=["host", "user", "hash", "external-ip"],
)
async def test_an_alert_sharing_one_entity_joins_the_open_incident(
    intake: Intake, starts: Starts, shared: dict[str, str]
) -> None:
    """Given an open incident, When an alert arrives sharing only one entity with it,
    Then the alert joins that incident and no new incident starts."""
    first = await intake.ingest("acme", "ocsf", [alert("C-1", **shared)])
    second = await intake.ingest("acme", "ocsf", [alert("C-2", at=T0 + 60_000, **shared)])
    assert (first.new_incidents, second.new_incidents, second.joined) == (1, 0, 1)
    assert second.items[0].incident_id == first.items[0].incident_id
    assert len(starts.incidents) == 1


async def test_a_private_ip_alone_does_not_correlate(intake: Intake) -> None:
    """Given an incident naming only a private IP, When another alert names the same
    private IP, Then it opens its own incident (private addresses repeat across sites)."""
    await intake.ingest("acme", "ocsf", [alert("P-1", ip="10.1.2.3")])
    second = await intake.ingest("acme", "ocsf", [alert("P-2", ip="10.1.2.3")])
    assert (second.new_incidents, second.joined) == (1, 0)


@pytest.mark.parametrize(("offset_ms", "joins"), [(3_600_000, True), (3_600_001, False)])
async def test_the_window_boundary(intake: Intake, offset_ms: int, joins: bool) -> None:
    """Given an incident last seeing host WS-9 at T, When an alert about WS-9 arrives
    at T + 1 h (inclusive) or T + 1 h + 1 ms, Then it joins, respectively opens a new one."""
    await intake.ingest("acme", "ocsf", [alert("W-1", host="WS-9")])
    later = await intake.ingest("acme", "ocsf", [alert("W-2", host="WS-9", at=T0 + offset_ms)])
    assert later.joined == (1 if joins else 0)
    assert later.new_incidents == (0 if joins else 1)


async def test_other_tenants_and_closed_incidents_are_not_joined(
    intake: Intake, store: Store
) -> None:
    """Given an acme incident about WS-1, When globex reports WS-1, Then globex gets its
    own incident; When acme's incident is closed by an analyst and WS-1 alerts again,
    Then a new one."""
    first = await intake.ingest("acme", "ocsf", [alert("X-1", host="WS-1")])
    other = await intake.ingest("globex", "ocsf", [alert("X-2", host="WS-1")])
    assert other.new_incidents == 1
    await CaseBook(store).close(
        first.items[0].incident_id or "",
        disposition="false-positive",
        summary="test host",
        actor="cli:alice",
    )
    again = await intake.ingest("acme", "ocsf", [alert("X-3", host="WS-1", at=T0 + 1)])
    assert (again.new_incidents, again.joined) == (1, 0)


async def test_a_storm_on_one_host_is_one_incident_started_once(
    intake: Intake, starts: Starts, store: Store
) -> None:
    """Given 30 distinct alerts about one host in one batch, When ingested,
    Then one incident holds them all and the start callback runs once."""
    result = await intake.ingest(
        "acme", "ocsf", [alert(f"S-{n}", host="WS-5", at=T0 + n) for n in range(30)]
    )
    assert (result.accepted, result.new_incidents, result.joined) == (30, 1, 0)
    assert len(starts.incidents) == 1 and len(starts.incidents[0].alerts) == 30
    assert result.started == starts.ids
    assert {i.incident_id for i in result.items} == {starts.ids[0]}
    row = await store.get_incident(starts.ids[0])
    assert row is not None and row.title == "alert S-0 on WS-5"


async def test_incident_ids_follow_the_stores_own(intake: Intake, store: Store) -> None:
    """Given an incident id already taken by the store's allocator,
    When intake opens two incidents, Then they get the next two ids of the day."""
    from tests.flows.factories import incident

    await store.save_incident(incident(1))
    result = await intake.ingest(
        "acme", "ocsf", [alert("I-1", host="WS-1"), alert("I-2", host="WS-2")]
    )
    assert sorted(i.incident_id or "" for i in result.items) == [
        f"INC-{NOW:%Y%m%d}-0002",
        f"INC-{NOW:%Y%m%d}-0003",
    ]


# Triage -------------------------------------------------------------------------------------
async def test_a_low_score_incident_is_recorded_but_not_started(
    store: Store, starts: Starts
) -> None:
    """Given threshold 40, When a low-severity alert about an ordinary host arrives,
    Then its incident is stored but not started; the same alert about a critical host
    (dc-*) starts."""
    policy = TriagePolicy(threshold=40, asset_criticality={"DC-*": 30})
    intake = Intake(store, start_incident=starts, triage={"acme": policy})
    low = await intake.ingest("acme", "ocsf", [alert("L-1", host="WS-3", severity=2)])
    assert low.new_incidents == 1 and low.recorded_only == [low.items[0].incident_id]
    assert starts.incidents == [] and low.to_start == []
    assert await store.get_incident(low.items[0].incident_id or "") is not None
    critical = await intake.ingest("acme", "ocsf", [alert("L-2", host="DC-01", severity=2)])
    assert starts.ids == [critical.items[0].incident_id]


async def test_a_recorded_incident_starts_once_when_its_score_reaches_the_threshold(
    intake: Intake, starts: Starts
) -> None:
    """Given a recorded-only low incident, When a critical alert joins it, Then it starts,
    with both alerts; When more alerts join, Then it is not started again."""
    low = await intake.ingest("acme", "ocsf", [alert("R-1", host="WS-4", severity=1)])
    assert starts.incidents == []
    await intake.ingest("acme", "ocsf", [alert("R-2", host="WS-4", severity=5, at=T0 + 1)])
    await intake.ingest("acme", "ocsf", [alert("R-3", host="WS-4", severity=5, at=T0 + 2)])
    assert starts.ids == [low.items[0].incident_id]
    assert [a.uid for a in starts.incidents[0].alerts] == ["R-1", "R-2"]


def test_triage_score_adds_severity_criticality_and_prevalence() -> None:
    """Given a policy with dc-* worth 30, When scoring, Then the parts add up and cap."""
    policy = TriagePolicy(asset_criticality={"dc-*": 30})
    assert policy.score(severity=3, hosts=["ws-1"], alert_count=1) == 40
    assert policy.score(severity=3, hosts=["dc-1"], alert_count=1) == 70
    assert policy.score(severity=3, hosts=["ws-1", "ws-2"], alert_count=4) == 51
    assert policy.score(severity=6, hosts=["dc-1", "ws-2"], alert_count=50) == 100


async def test_a_failed_start_is_retried_when_the_next_alert_joins(store: Store) -> None:
    """Given a start callback that fails, When the incident's next alert arrives after it
    recovers, Then the incident is started then, once."""
    failing = Starts(fail=True)
    intake = Intake(store, start_incident=failing)
    first = await intake.ingest("acme", "ocsf", [alert("F-1", host="WS-6")])
    assert first.started == [] and len(first.to_start) == 1
    failing.fail = False
    second = await intake.ingest("acme", "ocsf", [alert("F-2", host="WS-6", at=T0 + 1)])
    assert second.started == [first.items[0].incident_id] == failing.ids


# Dead letters -------------------------------------------------------------------------------
async def test_bad_payloads_are_dead_lettered_with_the_field(intake: Intake, store: Store) -> None:
    """Given a batch with a valid alert, one lacking finding_info.uid and a non-object,
    When ingested, Then the valid one is accepted and the others are dead-lettered with
    the failing field, in order."""
    bad = alert("B-2", host="WS-1")
    del bad["finding_info"]["uid"]
    result = await intake.ingest("acme", "ocsf", [alert("B-1", host="WS-1"), bad, 42])
    assert (result.accepted, result.rejected) == (1, 2)
    assert [(i.index, i.status, i.field) for i in result.items] == [
        (0, "accepted", None),
        (1, "rejected", "finding_info.uid"),
        (2, "rejected", "(root)"),
    ]
    letters = await store.dead_letters()
    assert [(d.source, d.field) for d in letters] == [
        ("acme/ocsf[1]", "finding_info.uid"),
        ("acme/ocsf[2]", "(root)"),
    ]
    assert json.loads(letters[0].payload)["finding_info"] == {"title": "alert B-2"}


async def test_a_vendor_payload_is_stored_raw_beside_its_finding(
    intake: Intake, store: Store
) -> None:
    """Given a CrowdStrike alert, When ingested from source crowdstrike,
    Then the stored row keeps the vendor payload and the OCSF finding."""
    body = json.loads((SAMPLES / "crowdstrike" / "alerts_v2_entities_response.json").read_text())
    sample = body["resources"][0]
    result = await intake.ingest("acme", "crowdstrike", [sample])
    assert result.accepted == 1
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(AlertRow.raw, AlertRow.finding))).one()
    assert row.raw == sample
    assert row.finding["finding_info"]["uid"] == sample["composite_id"]


async def test_unknown_source_fails_the_call(intake: Intake) -> None:
    """Given a source with no normaliser, When a batch arrives, Then the call fails."""
    with pytest.raises(UnknownSource):
        await intake.ingest("acme", "splunk", [alert("U-1")])


async def test_poller_cursors_round_trip(intake: Intake) -> None:
    """Given no cursor, When one is saved and then replaced, Then the latest is read."""
    assert await intake.cursor("acme", "crowdstrike") is None
    await intake.save_cursor("acme", "crowdstrike", "offset=1")
    await intake.save_cursor("acme", "crowdstrike", "offset=2")
    assert await intake.cursor("acme", "crowdstrike") == "offset=2"
    assert await intake.cursor("globex", "crowdstrike") is None
