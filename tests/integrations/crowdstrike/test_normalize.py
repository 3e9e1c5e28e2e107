"""normalize_alert: the documented alert samples as OCSF Detection Findings."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from integrations.crowdstrike import normalize_alert
from integrations.ocsf import NormalizationError, ObservableType, SeverityId

from .conftest import SPECS, sample

EXTRACT = json.loads((SPECS / "ocsf-detection-finding.schema-extract.json").read_text())
ALERTS: list[dict[str, Any]] = sample("alerts_v2_entities_response.json")["resources"]

# An endpoint (epp) alert in the Alerts v2 field names; the samples hold only cloud alerts.
ENDPOINT_ALERT: dict[str, Any] = {
    "composite_id": "1111:ind:2222:3333-10197-1234567",
    "cid": "1111",
    "product": "epp",
    "type": "ldt",
    "display_name": "PowerShell downloaded and executed a remote payload",
    "name": "SuspiciousPowerShell",
    "description": "A process attempted to download and run a script from the internet.",
    "severity": 90,
    "severity_name": "Critical",
    "status": "in_progress",
    "timestamp": "2026-04-20T22:49:13Z",
    "created_timestamp": "2026-04-20T22:49:16.583865066Z",
    "tactic_id": "TA0002",
    "tactic": "Execution",
    "technique_id": "T1059",
    "technique": "Command and Scripting Interpreter",
    "pattern_id": 10197,
    "pattern_disposition": 2048,
    "device": {
        "device_id": "2222",
        "hostname": "WS-01",
        "local_ip": "10.0.0.5",
        "external_ip": "198.51.100.99",
        "platform_name": "Windows",
        "os_version": "Windows 11",
        "product_type_desc": "Workstation",
    },
    "filename": "powershell.exe",
    "filepath": "\\Device\\HarddiskVolume3\\Windows\\System32\\powershell.exe",
    "cmdline": "powershell.exe -nop -w hidden -c IEX(...)",
    "sha256": "de96a6e69944335375dc1ac238336066889d9ffc7d73628ef4fe1b1b160ab32c",
    "md5": "7353f60b1739074eb17c5f4dddefe239",
    "local_process_id": "4780",
    "process_id": "pid:2222:1234",
    "user_name": "alice",
    "user_id": "S-1-5-21-1-2-3-1001",
    "parent_details": {"filename": "cmd.exe", "cmdline": "cmd.exe /c run.bat"},
}


def unknown_attributes(value: dict[str, Any], object_name: str, at: str) -> list[str]:
    """Attribute paths the OCSF 1.8.0 extract does not define (``unmapped`` excluded)."""
    if object_name == "class":
        attributes = EXTRACT["class"]["attributes"]
    elif object_name in EXTRACT["objects"]:
        attributes = EXTRACT["objects"][object_name]["attributes"]
    else:
        return []  # an object type the extract does not carry (sub_technique, os of os)
    known = {a["name"]: a for a in attributes}
    found = []
    for key, item in value.items():
        if key == "unmapped":
            continue
        if key not in known:
            found.append(f"{at}{key}")
            continue
        kind = known[key]["type"]
        if "enum" in known[key] and isinstance(item, int):
            assert str(item) in known[key]["enum"], f"{at}{key}={item} outside its enum"
        children = item if isinstance(item, list) else [item]
        for child in children:
            if isinstance(child, dict):
                found += unknown_attributes(child, kind, f"{at}{key}.")
    return found


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a["composite_id"][-12:])
def test_every_sample_alert_normalises(alert: dict[str, Any]) -> None:
    """Given each documented alert, when normalised, then the finding has the class identity,
    the composite id, the severity of §8, the event time and the original JSON."""
    finding = normalize_alert(alert)
    assert (finding.class_uid, finding.category_uid) == (2004, 2)
    assert (finding.activity_id, finding.type_uid) == (1, 200401)
    assert finding.uid == alert["composite_id"]
    assert finding.title == alert["display_name"]
    expected = {"High": SeverityId.HIGH, "Low": SeverityId.LOW}[alert["severity_name"]]
    assert finding.severity_id is expected
    assert finding.occurred_at == datetime.fromisoformat(alert["timestamp"])
    assert finding.status_id == 1
    assert finding.raw_data is not None and json.loads(finding.raw_data) == alert
    assert (
        finding.unmapped is not None
        and finding.unmapped["crowdstrike"]["severity"] == (alert["severity"])
    )
    dumped = finding.model_dump(exclude_none=True)
    assert unknown_attributes(dumped, "class", "") == []


def test_cloud_alert_maps_attack_user_and_source_ip() -> None:
    """Given the cloud IOA sample, when normalised, then its ATT&CK sub-technique, API user
    and public source address are mapped."""
    finding = normalize_alert(ALERTS[0])
    (attack,) = finding.finding_info.attacks
    assert attack.tactic is not None and attack.tactic.uid == "TA0005"
    assert attack.technique is not None and attack.technique.uid == "T1562"
    assert attack.sub_technique is not None and attack.sub_technique.uid == "T1562.007"
    assert finding.observed(ObservableType.USER_NAME) == ["dummy-user"]
    assert finding.external_ips() == ["192.0.2.1"]
    assert finding.metadata.product.vendor_name == "CrowdStrike"
    assert finding.metadata.tenant_uid == ALERTS[0]["cid"]
    assert finding.finding_info.src_url == ALERTS[0]["falcon_host_link"]


def test_endpoint_alert_maps_device_process_and_observables() -> None:
    """Given an endpoint alert, when normalised, then device, process, file hash, user and
    observables are mapped, and the host's own external address is not offered for
    blocking."""
    finding = normalize_alert(ENDPOINT_ALERT)
    assert finding.severity_id is SeverityId.CRITICAL and finding.status_id == 2
    assert finding.device is not None
    assert (finding.device.hostname, finding.device.uid, finding.device.ip) == (
        "WS-01",
        "2222",
        "10.0.0.5",
    )
    assert finding.device.os is not None and finding.device.os.type_id == 100
    (evidence,) = finding.evidences
    assert evidence.process is not None and evidence.process.pid == 4780
    assert evidence.process.cmd_line == ENDPOINT_ALERT["cmdline"]
    assert evidence.process.file is not None and evidence.process.file.name == "powershell.exe"
    assert finding.observed(ObservableType.HASH) == [ENDPOINT_ALERT["sha256"]]
    assert finding.observed(ObservableType.HOSTNAME) == ["WS-01"]
    assert finding.observed(ObservableType.USER_NAME) == ["alice"]
    assert finding.observed(ObservableType.COMMAND_LINE) == [ENDPOINT_ALERT["cmdline"]]
    assert finding.external_ips() == []
    (attack,) = finding.finding_info.attacks
    assert attack.technique is not None and attack.technique.uid == "T1059"
    assert unknown_attributes(finding.model_dump(exclude_none=True), "class", "") == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Informational", 1),
        ("Low", 2),
        ("Medium", 3),
        ("High", 4),
        ("Critical", 5),
        ("Catastrophic", 99),
    ],
)
def test_severity_name_table(name: str, expected: int) -> None:
    """Given each severity_name, when normalised, then severity_id follows §8 (99 Other with
    the vendor's word for an unknown name)."""
    finding = normalize_alert(dict(ENDPOINT_ALERT, severity_name=name))
    assert finding.severity_id == expected
    assert finding.severity == name


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("composite_id", None, "composite_id"),
        ("composite_id", 42, "composite_id"),
        ("timestamp", "yesterday", "timestamp"),
        ("device", "WS-01", "device"),
        ("user_name", ["alice"], "user_name"),
        ("severity_name", 4, "severity_name"),
    ],
)
def test_malformed_alert_names_failing_field(field: str, value: object, named: str) -> None:
    """Given an alert with one bad field, when normalised, then NormalizationError names it."""
    alert = copy.deepcopy(ENDPOINT_ALERT)
    if value is None:
        del alert[field]
    else:
        alert[field] = value
    with pytest.raises(NormalizationError) as caught:
        normalize_alert(alert)
    assert caught.value.field == named
    assert caught.value.vendor == "crowdstrike"


def test_alert_without_any_time_names_timestamp() -> None:
    """Given an alert with neither timestamp nor created_timestamp, when normalised, then
    the error names timestamp."""
    alert = {k: v for k, v in ENDPOINT_ALERT.items() if k not in ("timestamp", "created_timestamp")}
    with pytest.raises(NormalizationError) as caught:
        normalize_alert(alert)
    assert caught.value.field == "timestamp"


def test_created_timestamp_stands_in_for_timestamp() -> None:
    """Given an alert with only created_timestamp, when normalised, then time is taken
    from it."""
    alert = {k: v for k, v in ENDPOINT_ALERT.items() if k != "timestamp"}
    finding = normalize_alert(alert)
    # OCSF time is whole milliseconds.
    assert finding.occurred_at == datetime(2026, 4, 20, 22, 49, 16, 583000, tzinfo=UTC)


C2_ALERT = {
    **ENDPOINT_ALERT,
    "user_principal": "alice@example.com",
    "network_accesses": [
        {
            "access_type": 0,
            "connection_direction": "Outbound",
            "isIPV6": False,
            "local_address": "10.0.0.5",
            "local_port": 49822,
            "protocol": "TCP",
            "remote_address": "203.0.113.66",
            "remote_port": 443,
        },
        {
            "connection_direction": "Inbound",
            "local_address": "10.0.0.5",
            "local_port": 3389,
            "remote_address": "198.51.100.20",
            "remote_port": 51000,
        },
    ],
}


def test_network_accesses_and_user_principal_have_an_ocsf_home() -> None:
    """Given an endpoint alert with an outbound C2 connection, an inbound RDP connection
    and the user's UPN,
    When normalised,
    Then each connection is an evidence with src/dst endpoints the right way round and its
    direction, the remote addresses are firewall candidates, actor.user is the UPN (what
    the identity provider knows) while the process keeps the host account, every
    attribute is OCSF 1.8.0, and neither field is left in unmapped."""
    finding = normalize_alert(copy.deepcopy(C2_ALERT))
    connections = [e for e in finding.evidences if e.dst_endpoint is not None]
    assert [
        (e.src_endpoint and e.src_endpoint.ip, e.dst_endpoint and e.dst_endpoint.ip)
        for e in connections
    ] == [("10.0.0.5", "203.0.113.66"), ("198.51.100.20", "10.0.0.5")]
    assert connections[0].dst_endpoint is not None and connections[0].dst_endpoint.port == 443
    dumped = finding.model_dump(mode="json", exclude_none=True)
    infos = [e["connection_info"] for e in dumped["evidences"] if "connection_info" in e]
    assert infos == [
        {"direction": "Outbound", "direction_id": 2, "protocol_name": "TCP"},
        {"direction": "Inbound", "direction_id": 1},
    ]
    assert {"203.0.113.66", "198.51.100.20"} <= set(finding.external_ips())
    assert finding.actor is not None and finding.actor.user is not None
    assert finding.actor.user.name == "alice@example.com"
    assert "alice@example.com" in finding.observed(ObservableType.USER_NAME)
    unmapped = (finding.unmapped or {}).get("crowdstrike", {})
    assert "network_accesses" not in unmapped and "user_principal" not in unmapped
    assert unknown_attributes(dumped, "class", "") == []


@pytest.mark.parametrize("value", ["203.0.113.66", [1, 2], {"remote_address": "x"}])
def test_malformed_network_accesses_names_the_field(value: object) -> None:
    """Given network_accesses that is not a list of objects, When normalised, Then the
    error names the field."""
    with pytest.raises(NormalizationError) as caught:
        normalize_alert(dict(ENDPOINT_ALERT, network_accesses=value))
    assert caught.value.field == "network_accesses"
