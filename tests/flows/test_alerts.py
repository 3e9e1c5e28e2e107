"""Loading alert files: bad input gets the field, the file and the line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.detect import load_alert_file
from flows.errors import AlertRejected
from stanch.demo import scenario_alerts


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def _alert() -> dict[str, object]:
    alert = scenario_alerts(datetime.now(UTC), edr="crowdstrike", identity="okta")[0]
    return alert.model_dump(mode="json", exclude_none=True)


def test_valid_file_with_one_or_many_alerts(tmp_path: Path) -> None:
    """Given a file with one finding and one with an array of two, When loaded, Then parsed."""
    assert len(load_alert_file(_write(tmp_path, _alert()))) == 1
    assert len(load_alert_file(_write(tmp_path, [_alert(), _alert()]))) == 2


def test_missing_nested_field_is_named_with_its_line(tmp_path: Path) -> None:
    """Given an alert whose finding_info has no uid,
    When loaded,
    Then the rejection names finding_info.uid and the line of finding_info in the file."""
    data = _alert()
    del data["finding_info"]["uid"]  # type: ignore[attr-defined]
    path = _write(tmp_path, data)
    with pytest.raises(AlertRejected) as caught:
        load_alert_file(path)
    line = next(
        n for n, text in enumerate(path.read_text().splitlines(), 1) if '"finding_info"' in text
    )
    assert caught.value.field == "finding_info.uid"
    assert caught.value.source == f"{path}:{line}"
    assert "required" in caught.value.reason.lower()


def test_wrong_class_is_rejected(tmp_path: Path) -> None:
    """Given a finding of another OCSF class, When loaded, Then class_uid is the failing field."""
    data = _alert() | {"class_uid": 2001}
    with pytest.raises(AlertRejected) as caught:
        load_alert_file(_write(tmp_path, data))
    assert caught.value.field == "class_uid"


def test_second_alert_of_an_array_is_located(tmp_path: Path) -> None:
    """Given an array whose second alert has a bad severity, When loaded, Then it is named."""
    bad = _alert() | {"severity_id": 42}
    path = _write(tmp_path, [_alert(), bad])
    with pytest.raises(AlertRejected) as caught:
        load_alert_file(path)
    lines = [n for n, t in enumerate(path.read_text().splitlines(), 1) if '"severity_id"' in t]
    assert caught.value.field == "[1].severity_id"
    assert caught.value.source == f"{path}:{lines[1]}"


def test_broken_json_names_the_line(tmp_path: Path) -> None:
    """Given a file that is not JSON, When loaded, Then the JSON error's line is given."""
    path = tmp_path / "alert.json"
    path.write_text('{\n  "class_uid": 2004,\n  oops\n}')
    with pytest.raises(AlertRejected) as caught:
        load_alert_file(path)
    assert caught.value.source == f"{path}:3"


def test_empty_array_is_rejected(tmp_path: Path) -> None:
    """Given an empty array, When loaded, Then it is rejected rather than silently ignored."""
    with pytest.raises(AlertRejected, match="no alert"):
        load_alert_file(_write(tmp_path, []))
