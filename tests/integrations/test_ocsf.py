"""DetectionFinding: OCSF 1.8.0 validation and the entities stanch reads from a finding."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from integrations.ocsf import DetectionFinding, NormalizationError, ObservableType

SPEC = Path(__file__).resolve().parent.parent / "vendor_specs" / "ocsf-detection-finding.md"
SHA_A = "de96a6e69944335375dc1ac238336066889d9ffc7d73628ef4fe1b1b160ab32c"
SHA_B = "a" * 64
SHA1 = "b" * 40


def example_event() -> dict[str, Any]:
    """The complete example event of §9 of the OCSF reference, as a fresh dict."""
    text = SPEC.read_text(encoding="utf-8")
    section = text.split("## 9.", 1)[1].split("## 10.", 1)[0]
    match = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert match is not None, "§9 of the OCSF reference has no json block"
    event: dict[str, Any] = json.loads(match.group(1))
    return event


def minimal(**extra: Any) -> dict[str, Any]:
    """The smallest valid Detection Finding, with top-level attributes added or replaced."""
    event: dict[str, Any] = {
        "class_uid": 2004,
        "category_uid": 2,
        "activity_id": 1,
        "type_uid": 200401,
        "severity_id": 3,
        "time": 1_776_725_353_000,
        "metadata": {"version": "1.8.0", "product": {"name": "Test"}},
        "finding_info": {"uid": "finding-1"},
    }
    event.update(extra)
    return event


def error_locations(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[Any, ...]]:
    return [tuple(error["loc"]) for error in exc.value.errors()]


# Validation -------------------------------------------------------------------------------


def test_spec_example_event_validates() -> None:
    """Given the §9 example event of the OCSF reference
    When it is validated as a DetectionFinding
    Then it is accepted and its typed attributes read back as written."""
    finding = DetectionFinding.model_validate(example_event())

    assert finding.class_uid == 2004
    assert finding.type_uid == 200401
    assert finding.uid.endswith(":33333333333-10197-1234567")
    assert finding.title == "PowerShell downloaded and executed a remote payload"
    assert finding.vendor == "CrowdStrike"
    assert finding.device is not None
    assert finding.device.hostname == "WS-01"
    assert finding.occurred_at.year == 2026


@pytest.mark.parametrize("value", [2003, 2005, 0])
def test_wrong_class_uid_is_rejected(value: int) -> None:
    """Given an otherwise valid finding whose class_uid is not 2004
    When it is validated
    Then ValidationError names class_uid."""
    event = example_event()
    event["class_uid"] = value
    with pytest.raises(ValidationError) as exc:
        DetectionFinding.model_validate(event)
    assert ("class_uid",) in error_locations(exc)


def test_wrong_category_uid_is_rejected() -> None:
    """Given a finding in category 1 instead of 2 (Findings)
    When it is validated
    Then ValidationError names category_uid."""
    event = example_event()
    event["category_uid"] = 1
    with pytest.raises(ValidationError) as exc:
        DetectionFinding.model_validate(event)
    assert ("category_uid",) in error_locations(exc)


@pytest.mark.parametrize(("activity_id", "type_uid"), [(1, 200402), (2, 200401), (1, 2004)])
def test_type_uid_must_be_class_times_100_plus_activity(activity_id: int, type_uid: int) -> None:
    """Given a type_uid that is not class_uid*100 + activity_id
    When it is validated
    Then ValidationError says type_uid and the expected value."""
    event = example_event()
    event["activity_id"] = activity_id
    event["type_uid"] = type_uid
    with pytest.raises(ValidationError) as exc:
        DetectionFinding.model_validate(event)
    message = str(exc.value)
    assert "type_uid" in message
    assert str(2004 * 100 + activity_id) in message


def test_type_uid_matching_another_activity_validates() -> None:
    """Given activity 2 (Update) with type_uid 200402
    When it is validated
    Then it is accepted (the rule is arithmetic, not a fixed value)."""
    finding = DetectionFinding.model_validate(minimal(activity_id=2, type_uid=200402))
    assert finding.type_uid == 200402


def test_missing_finding_info_uid_is_rejected() -> None:
    """Given a finding whose finding_info has no uid
    When it is validated
    Then ValidationError names finding_info.uid."""
    event = example_event()
    del event["finding_info"]["uid"]
    with pytest.raises(ValidationError) as exc:
        DetectionFinding.model_validate(event)
    assert ("finding_info", "uid") in error_locations(exc)


def test_empty_finding_info_uid_is_rejected() -> None:
    """Given a finding whose finding_info.uid is the empty string
    When it is validated
    Then ValidationError names finding_info.uid."""
    with pytest.raises(ValidationError) as exc:
        DetectionFinding.model_validate(minimal(finding_info={"uid": ""}))
    assert ("finding_info", "uid") in error_locations(exc)


def test_product_with_neither_name_nor_uid_is_rejected() -> None:
    """Given metadata.product carrying only a vendor_name
    When the finding is validated
    Then ValidationError names metadata.product and says name/uid is needed."""
    event = minimal(metadata={"version": "1.8.0", "product": {"vendor_name": "Acme"}})
    with pytest.raises(ValidationError) as exc:
        DetectionFinding.model_validate(event)
    assert ("metadata", "product") in error_locations(exc)
    assert "name, uid" in str(exc.value)


@pytest.mark.parametrize("product", [{"name": "Only Name"}, {"uid": "only-uid"}])
def test_product_with_name_or_uid_validates(product: dict[str, str]) -> None:
    """Given metadata.product with just a name, or just a uid
    When the finding is validated
    Then it is accepted and vendor falls back to what is there."""
    finding = DetectionFinding.model_validate(
        minimal(metadata={"version": "1.8.0", "product": product})
    )
    assert finding.vendor == next(iter(product.values()))


def test_unknown_attributes_are_preserved() -> None:
    """Given the example event with OCSF attributes stanch does not type
    When it is validated and dumped
    Then those attributes survive, at top level and inside nested objects."""
    event = example_event()
    event["x_custom"] = {"kept": True}
    finding = DetectionFinding.model_validate(event)
    dumped = finding.model_dump(mode="json", exclude_none=True)

    assert dumped["x_custom"] == {"kept": True}
    assert dumped["is_alert"] is True
    assert dumped["disposition"] == "Blocked"
    assert dumped["resources"] == event["resources"]
    assert dumped["finding_info"]["analytic"]["uid"] == "10197"
    assert dumped["device"]["type"] == "Desktop"
    assert dumped["metadata"]["original_time"] == "2026-04-20T22:49:13Z"


# Observed entities ------------------------------------------------------------------------


def test_observed_on_spec_example() -> None:
    """Given the §9 example event
    When each entity type is read
    Then hostnames, users, SHA-256 and IPs are found once each, in order."""
    finding = DetectionFinding.model_validate(example_event())

    assert finding.observed(ObservableType.HOSTNAME) == ["WS-01"]
    assert finding.observed(ObservableType.USER_NAME) == ["alice"]
    assert finding.observed(ObservableType.HASH) == [SHA_A]
    assert finding.observed(ObservableType.IP_ADDRESS) == ["192.0.2.10", "198.51.100.23"]


def test_observed_reads_typed_objects_without_observables() -> None:
    """Given a finding whose entities appear only in typed objects (no observables list)
    When each entity type is read
    Then device, evidence, actor and process objects all contribute, de-duplicated."""
    event = minimal(
        device={"hostname": "host-a"},
        actor={"user": {"name": "bob"}},
        evidences=[
            {
                "device": {"hostname": "host-b"},
                "user": {"name": "carol"},
                "file": {"name": "x.exe", "hashes": [{"algorithm_id": 3, "value": SHA_B}]},
                "src_endpoint": {"ip": "10.0.0.5"},
                "dst_endpoint": {"ip": "203.0.113.7"},
                "process": {
                    "user": {"name": "bob"},
                    "file": {"name": "y.exe", "hashes": [{"algorithm_id": 3, "value": SHA_A}]},
                },
            },
            {"device": {"hostname": "host-a"}, "dst_endpoint": {"ip": "203.0.113.7"}},
        ],
    )
    finding = DetectionFinding.model_validate(event)

    assert finding.observed(ObservableType.HOSTNAME) == ["host-a", "host-b"]
    assert finding.observed(ObservableType.USER_NAME) == ["bob", "carol"]
    assert finding.observed(ObservableType.HASH) == [SHA_B, SHA_A]
    assert finding.observed(ObservableType.IP_ADDRESS) == ["10.0.0.5", "203.0.113.7"]


def test_observed_puts_observables_first_then_objects_deduplicated() -> None:
    """Given the same host named in observables and in device, plus one only in evidence
    When hostnames are read
    Then observables come first, the duplicate appears once, the evidence one last."""
    event = minimal(
        observables=[
            {"type_id": 1, "value": "obs-host"},
            {"type_id": 1, "value": "dev-host"},
            {"type_id": 1, "value": "obs-host"},
            {"type_id": 1},  # no value: ignored
            {"type_id": 4, "value": "not-a-host"},
        ],
        device={"hostname": "dev-host"},
        evidences=[{"device": {"hostname": "ev-host"}}],
    )
    finding = DetectionFinding.model_validate(event)
    assert finding.observed(ObservableType.HOSTNAME) == ["obs-host", "dev-host", "ev-host"]


def test_only_sha256_counts_as_hash_from_objects() -> None:
    """Given a file with MD5 (1), SHA-1 (2), SHA-256 (3) and SHA-512 (4) fingerprints
    When hashes are read
    Then only the SHA-256 is returned."""
    hashes = [
        {"algorithm_id": 1, "value": "c" * 32},
        {"algorithm_id": 2, "value": SHA1},
        {"algorithm_id": 3, "value": SHA_B},
        {"algorithm_id": 4, "value": "d" * 128},
    ]
    event = minimal(evidences=[{"file": {"name": "f.bin", "hashes": hashes}}])
    finding = DetectionFinding.model_validate(event)
    assert finding.observed(ObservableType.HASH) == [SHA_B]


def test_observed_of_a_type_nobody_names_is_empty() -> None:
    """Given the example event, which names no URL
    When URLs are read
    Then the list is empty."""
    finding = DetectionFinding.model_validate(example_event())
    assert finding.observed(ObservableType.URL_STRING) == []


# External IPs -----------------------------------------------------------------------------


def test_external_ips_keeps_public_and_documentation_ranges() -> None:
    """Given IPs from public, documentation, RFC 1918, loopback and garbage values
    When external_ips() is read
    Then only public and RFC 5737/3849 addresses remain, in order."""
    values = [
        "8.8.8.8",
        "10.1.2.3",
        "192.0.2.10",
        "172.16.5.4",
        "198.51.100.23",
        "192.168.1.1",
        "127.0.0.1",
        "203.0.113.9",
        "not-an-ip",
        "999.1.1.1",
        "2001:db8::1",
        "::1",
        "fd00::1",
        "2606:4700:4700::1111",
    ]
    observables = [{"type_id": 2, "value": v} for v in values]
    finding = DetectionFinding.model_validate(minimal(observables=observables))

    assert finding.external_ips() == [
        "8.8.8.8",
        "192.0.2.10",
        "198.51.100.23",
        "203.0.113.9",
        "2001:db8::1",
        "2606:4700:4700::1111",
    ]


def test_external_ips_reads_endpoints_too() -> None:
    """Given a public IP only in an evidence's dst_endpoint and a private one in src
    When external_ips() is read
    Then the public one is returned."""
    event = minimal(
        evidences=[{"src_endpoint": {"ip": "10.9.9.9"}, "dst_endpoint": {"ip": "1.1.1.1"}}]
    )
    assert DetectionFinding.model_validate(event).external_ips() == ["1.1.1.1"]


def test_validation_does_not_mutate_input() -> None:
    """Given the example event
    When it is validated
    Then the caller's dict is unchanged (the model keeps its own copy)."""
    event = example_event()
    before = copy.deepcopy(event)
    DetectionFinding.model_validate(event)
    assert event == before


def test_normalization_error_carries_its_parts() -> None:
    """Given a NormalizationError for a vendor field
    When it is inspected
    Then vendor, field and reason are attributes and appear in the message."""
    error = NormalizationError("okta", "actor.alternateId", "missing")
    assert isinstance(error, ValueError)
    assert (error.vendor, error.field, error.reason) == ("okta", "actor.alternateId", "missing")
    assert str(error) == "okta: actor.alternateId: missing"
