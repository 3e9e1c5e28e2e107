"""Foreign CACAO playbooks: what stanch can execute goes through policy; the rest is manual."""

from __future__ import annotations

import base64
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.playbook import export_document, import_document
from stanch.playbook_cli import app
from tests.playbooks.helpers import PLAYBOOKS, REPO

HERE = Path(__file__).resolve().parent
COMMUNITY = HERE / "community-ransomware.json"
LAYOUT = "extension-definition--00000000-0000-4000-8000-000000000900"
ALERT = PLAYBOOKS / "examples" / "ransomware" / "ransomware.json"


def _doc(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HERE / name).read_text(encoding="utf-8"))
    return data


def _rows(name: str) -> dict[str, tuple[str, tuple[str, ...], str]]:
    result = import_document((HERE / name).read_text(encoding="utf-8"), name)
    return {r.name: (r.status, r.stanch, r.detail) for r in result.rows}


def run(*args: str) -> int:
    result = app(list(args), result_action="return_value")
    assert isinstance(result, int)
    return result


def test_every_step_type_maps_to_an_action_a_manual_step_or_structure() -> None:
    """Given a community playbook with every CACAO step type (start, end, action,
    playbook-action, parallel, if-, while- and switch-condition) and ssh, bash, powershell,
    http-api, manual and OpenC2 commands,
    When imported,
    Then OpenC2 commands stanch maps become actions, everything else is manual with the
    reason, conditions are structure, and the unreachable step is left out."""
    rows = _rows("community-ransomware.json")
    assert rows["Isolate the hosts"][0] == "action"
    assert rows["Isolate the hosts"][1] == ("isolate_the_hosts_host", "isolate_the_hosts")
    assert rows["Block the C2 server"][:2] == ("action", ("block_the_c2_server",))
    assert rows["Block the payload"][0] == "action"
    assert "confirm" in rows["Block the payload"][2]
    manual = {
        "Confirm with the asset owner": "a manual step",
        "Collect a sample": "ssh commands are never run",
        "Open a ticket": "http-api commands are never run",
        "Scan the host": "while-condition loop",
        "Run the recovery playbook": "cannot call other playbooks",
        "Email the customer": "powershell commands are never run",
        "Escalate": "only when another step fails",
    }
    for name, why in manual.items():
        status, _, detail = rows[name]
        assert (status, why in detail) == ("manual", True), (name, detail)
    for name in ("Payload known?", "Until the host scans clean", "Who to tell", "Contain"):
        assert rows[name][0] == "structure"
    assert rows["Old step nobody links to"][0] == "left out"
    assert rows["authentication_info_definitions"][0] == "dropped"


def test_the_imported_playbook_plans_through_policy_and_lists_manual_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given the community playbook imported into a file,
    When `stanch playbook plan` runs it on the ransomware alert with the bundled policy,
    Then isolation and the C2 block are planned with policy's verdict (approval), the
    payload block waits for its condition to be confirmed, and every manual step is
    listed as not executed."""
    target = tmp_path / "community.yaml"
    assert run("import", str(COMMUNITY), "-o", str(target)) == 0
    capsys.readouterr()
    code = run("plan", str(target), "--alert", str(ALERT), "--policies", str(REPO / "policies"))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "  isolate_the_hosts: edr.contain_host WS-0042" in out
    assert "-> approval by 1 of @soc-analysts" in out
    assert "  block_the_c2_server: firewall.block_ip 198.51.100.23 (ttl_seconds=86400" in out
    assert "  block_the_payload: waiting: waiting for an analyst to confirm: CACAO condition" in out
    for step in ("collect_a_sample", "open_a_ticket", "scan_the_host", "email_the_customer"):
        assert f"  {step}: not executed: " in out


def test_credentials_are_dropped_and_never_written(tmp_path: Path) -> None:
    """Given a community playbook whose ssh agent has http-basic credentials,
    When imported,
    Then the password appears nowhere in the YAML, nor in a re-export."""
    result = import_document(COMMUNITY.read_text(encoding="utf-8"), "c.json")
    assert "Winter2024" not in result.yaml
    assert "authentication_info" not in result.yaml
    assert "Winter2024" not in json.dumps(export_document(result.playbook))


def test_unknown_extensions_and_commands_survive_re_export() -> None:
    """Given the community playbook with a layout extension (on the playbook and a step),
    When imported and exported again,
    Then the extension definition, its playbook data and its step data are all there, and
    the ssh step still carries its original command and target."""
    result = import_document(COMMUNITY.read_text(encoding="utf-8"), "c.json")
    doc = export_document(result.playbook)
    assert LAYOUT in doc["extension_definitions"]
    assert doc["playbook_extensions"][LAYOUT] == {"zoom": 1.5}
    steps = {s.get("name"): s for s in doc["workflow"].values()}
    assert steps["Confirm with the asset owner"]["step_extensions"][LAYOUT] == {"x": 120, "y": 40}
    assert steps["Collect a sample"]["commands"][0]["type"] == "ssh"
    assert steps["Collect a sample"]["targets"] == ["linux--00000000-0000-4000-8000-000000000005"]
    assert doc["derived_from"] == ["playbook--00000000-0000-4000-8000-000000000001"]
    assert doc["created_by"] == "identity--00000000-0000-4000-8000-000000000a01"


def test_an_ssh_only_playbook_imports_as_valid_yaml_with_one_manual_step(tmp_path: Path) -> None:
    """Given an OASIS-style playbook with one ssh step on a switch,
    When imported to a directory,
    Then the file is named after the CACAO name, validates, and its one step is manual."""
    assert run("import", str(HERE / "bad-mac-address.json"), "-o", str(tmp_path)) == 0
    written = tmp_path / "block-a-bad-mac-address.yaml"
    assert run("validate", str(written)) == 0
    assert "manual: 'Block MAC address: ssh command on Access switch: mac address-table" in (
        written.read_text(encoding="utf-8")
    )


def test_openc2_readings_and_what_stanch_refuses() -> None:
    """Given OpenC2 1.1 message envelopes, an ipv4_net array with /32, a device by id from a
    variable with a value, a /24 range and an app_restriction containment,
    When imported,
    Then the first three become unblock, release and unblock-hash actions, and the range and
    the app restriction are manual with the reason."""
    rows = _rows("openc2-readings.json")
    assert rows["Unblock the address"][:1] == ("action",)
    assert "firewall.unblock_ip" in rows["Unblock the address"][2]
    assert "edr.release_host" in rows["Release the host"][2]
    assert "edr.unblock_hash" in rows["Allow the file again"][2]
    assert rows["Block a whole range"][0] == "manual"
    assert "single IPv4 addresses" in rows["Block a whole range"][2]
    assert "network only" in rows["Quarantine with app restriction"][2]


def _with_command(content: dict[str, Any], **step: Any) -> str:
    doc = _doc("bad-mac-address.json")
    action = "action--00000000-0000-4000-8000-000000000102"
    doc["workflow"][action]["commands"] = [
        {
            "type": "openc2-http",
            "command": "POST /.well-known/openc2 HTTP/1.1",
            "content_b64": base64.b64encode(json.dumps(content).encode()).decode(),
        }
    ]
    doc["workflow"][action].update(step)
    return json.dumps(doc)


def test_a_target_with_no_value_stays_manual() -> None:
    """Given deny ipv4_net on an external variable stanch does not bind,
    When imported,
    Then the step is manual: stanch does not guess what the variable holds."""
    text = _with_command({"action": "deny", "target": {"ipv4_net": "__c2__:value"}})
    [row] = [r for r in import_document(text, "x.json").rows if r.name == "Block MAC address"]
    assert row.status == "manual"
    assert "no value for __c2__" in row.detail


def test_incident_variables_bind_to_the_incident() -> None:
    """Given deny ipv4_net on __incident_external_ips__,
    When imported,
    Then the step blocks each of the incident's external addresses, with no expiry."""
    text = _with_command(
        {"action": "deny", "target": {"ipv4_net": "__incident_external_ips__:value"}}
    )
    result = import_document(text, "x.json")
    [step] = [s for s in result.playbook.steps() if s.id == "block_mac_address"]
    assert step.step.for_each == "{{ incident.external_ips }}"
    assert step.step.args == {
        "ip": "{{ item }}",
        "ttl_seconds": None,
        "reason": "stanch {{ incident.id }}: CACAO Block MAC address",
    }


def test_foreign_text_is_data_never_a_template_or_yaml(tmp_path: Path) -> None:
    """Given a playbook whose name has a newline and YAML, and whose manual command holds
    jinja2 markup,
    When imported and planned,
    Then the header stays one comment, and the note shows the markup as written."""
    doc = _doc("bad-mac-address.json")
    doc["name"] = "Nice name\ntrigger: {}\nsteps: evil"
    action = doc["workflow"]["action--00000000-0000-4000-8000-000000000102"]
    action["commands"] = [{"type": "manual", "command": "type {{ 7*7 }} and {% raw %}x"}]
    result = import_document(json.dumps(doc), "x.json", playbook_id="hostile")
    header = [line for line in result.yaml.splitlines() if line.startswith("#")]
    assert all("\n" not in line for line in header) and "steps: evil" in header[0]
    assert result.yaml.count("\ntrigger:") == 1
    [step] = result.playbook.steps()
    rendered = step.templates["manual"].render({})
    assert "type {{ 7*7 }} and {% raw %}x" in rendered
    # The same name on a stanch export, whose header quotes the CACAO name as given.
    exported = export_document(result.playbook)
    exported["name"] = doc["name"]
    again = import_document(json.dumps(exported), "y.json").yaml
    assert again.count("\ntrigger:") == 1 and again.count("\nsteps:") == 1


def test_a_foreign_step_with_a_stanch_extension_elsewhere_is_not_trusted() -> None:
    """Given a foreign document that copies stanch's step extension onto its ssh step but
    has no stanch playbook extension,
    When imported,
    Then it is a foreign playbook and the ssh step is manual: an extension alone executes
    nothing."""
    exported = export_document(
        import_document(
            _with_command({"action": "query", "target": {"features": []}}), "x"
        ).playbook
    )
    ext = next(iter(exported["extension_definitions"]))
    doc = copy.deepcopy(_doc("bad-mac-address.json"))
    action = doc["workflow"]["action--00000000-0000-4000-8000-000000000102"]
    doc["extension_definitions"] = {ext: exported["extension_definitions"][ext]}
    action["step_extensions"] = {
        ext: {"step_id": "x", "stage": "contain", "position": 0, "action": "edr.contain_host"}
    }
    result = import_document(json.dumps(doc), "x.json")
    assert result.foreign
    assert [s.step.kind for s in result.playbook.steps()] == ["manual"]


def test_a_foreign_import_passes_stanch_playbook_test_with_its_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given the OpenC2 playbook imported into a copy of the library, with an example case
    (the ransomware alert, which still routes to the ransomware playbook),
    When `stanch playbook test` runs,
    Then its case passes: the lifted block, the host release and the hash unblock are
    planned in remediate, and the range and the app restriction are not executed."""
    library = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, library)
    # The import has no trigger, so it would also take the incidents that no playbook's
    # trigger fits, as the event-only siem-detection example's is: leave that one out.
    (library / "siem-detection.yaml").unlink()
    shutil.rmtree(library / "examples" / "siem-detection")
    assert (
        run("import", str(HERE / "openc2-readings.json"), "-o", str(library / "lift-c2.yaml")) == 0
    )
    examples = library / "examples" / "lift-c2"
    examples.mkdir()
    shutil.copy(ALERT, examples / "ransomware.json")
    reason = "stanch INC-20250314-0001: CACAO"
    sha = "8f2b7c1e5a9d4f3b6c0e1d2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e"
    case = {
        "name": "lift",
        "alerts": ["ransomware.json"],
        "routes_to": "ransomware",
        "plans": {
            "contain": [],
            "remediate": [
                {"action": "firewall.unblock_ip", "target": "203.0.113.66"},
                {"action": "edr.release_host", "target": "aid-0042",
                 "parameters": {"reason": f"{reason} Release the host"}},
                {"action": "edr.unblock_hash", "target": sha},
            ],
        },
        "not_executed": ["block_a_whole_range", "quarantine_with_app_restriction"],
    }  # fmt: skip
    (examples / "expected.yaml").write_text(yaml.safe_dump({"cases": [case]}), encoding="utf-8")
    capsys.readouterr()
    code = run("test", "--playbooks", str(library))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ok   lift-c2: lift" in out
