"""``stanch playbook``: validate playbooks, dry-run one, test them all, explain routing.

Nothing here calls a vendor, writes to the store or starts Prefect: lookups are answered
by the in-process lab simulators, seeded with the hosts and users the alerts name.
Validation lines read ``file:line: code: message`` like compiler errors (``file: /json/
pointer: rule: message`` for CACAO documents). ``export`` and ``import`` live in
:mod:`stanch.cacao_cli`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import yaml
from cyclopts import App, Parameter
from pydantic import ValidationError

from flows.models import Incident, Stage, Verdict
from flows.playbook import (
    CacaoError,
    CacaoIssue,
    LoadedPlaybook,
    Lookup,
    PlaybookError,
    PlaybookPlan,
    PlaybookRunError,
    adapter_lookup,
    decide,
    import_document,
    load_playbook,
    load_playbooks,
    plan_playbook,
    playbook_files,
)
from flows.playbook import route as route_incident
from flows.policy import PolicyError, RoeDecision, policy_for_tenant
from flows.settings import StanchSettings, playbook_directory, policy_directory
from flows.wiring import Lab, connect
from integrations.ocsf import DetectionFinding
from stanch.cli_support import FAILED, OK, USAGE, print_json

JsonFlag = Annotated[bool, Parameter(name="--json", negative=())]

app = App(name="playbook", help="YAML playbooks: validate, dry-run, test and route.")
app.command(
    "stanch.cacao_cli:export_playbook",
    name="export",
    help="Export a playbook as an OASIS CACAO 2.0 document.",
)
app.command(
    "stanch.cacao_cli:import_playbook",
    name="import",
    help="Import a CACAO 2.0 playbook as stanch YAML, with a mapping of every step.",
)

_ACTION_STAGES = (Stage.CONTAIN, Stage.REMEDIATE)


class _BadAlert(Exception):
    pass


def read_alerts(paths: Sequence[Path]) -> list[DetectionFinding]:
    """OCSF Detection Findings from JSON files (each one finding or a list of them).

    Raises:
        _BadAlert: a file is unreadable, not JSON, or not a Detection Finding.
    """
    alerts: list[DetectionFinding] = []
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _BadAlert(f"{path}: cannot read alert JSON: {exc}") from exc
        for i, item in enumerate(data if isinstance(data, list) else [data]):
            try:
                alerts.append(DetectionFinding.model_validate(item))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "(root)"
                raise _BadAlert(f"{path}[{i}]: {where}: {first['msg']}") from exc
    if not alerts:
        raise _BadAlert("no alerts given")
    return alerts


def incident_of(
    alerts: list[DetectionFinding], *, tenant: str | None = None, incident_id: str | None = None
) -> Incident:
    """One incident made of ``alerts``, with an id derived from the first alert's date."""
    first = min(a.occurred_at for a in alerts)
    chosen = tenant or next((a.metadata.tenant_uid for a in alerts if a.metadata.tenant_uid), None)
    return Incident(
        id=incident_id or f"INC-{first:%Y%m%d}-0001",
        tenant=chosen or "demo",
        title=max(alerts, key=lambda a: int(a.severity_id)).title[:200],
        created_at=first,
        alerts=alerts,
    )


@asynccontextmanager
async def lab_lookup(incident: Incident, *, absent: Sequence[str] = ()) -> AsyncIterator[Lookup]:
    """Lookups answered by fresh lab simulators that know the incident's hosts and users.

    Args:
        incident: whose hosts and users to seed.
        absent: host names or logins to leave out, to exercise "not found".
    """
    settings = StanchSettings(mode="lab")
    # No lab fleet: a case's hosts are exactly those it names (and hunts find none).
    lab = Lab(fleet=False)
    edr = lab.simulator(settings.vendor_for("edr", incident.tenant))
    for hostname in incident.hostnames:
        if hostname not in absent:
            edr.add_host(hostname)
    identity = lab.simulator(settings.vendor_for("identity", incident.tenant))
    for login in incident.users:
        if login not in absent:
            identity.add_user(login)  # type: ignore[attr-defined]
    async with connect(settings, lab, tenant=incident.tenant) as found:
        yield adapter_lookup({c: found.adapter(c) for c in found.vendors})


async def _plan_in_lab(
    playbook: LoadedPlaybook,
    incident: Incident,
    *,
    confirmed: Sequence[str] = (),
    absent: Sequence[str] = (),
) -> PlaybookPlan:
    async with lab_lookup(incident, absent=absent) as lookup:
        return await plan_playbook(playbook, incident, lookup, confirmed=set(confirmed))


def _params(parameters: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in parameters.items())


def _verdict(decision: RoeDecision) -> str:
    if decision.verdict is Verdict.APPROVAL:
        return f"approval by {decision.approvals_required} of {decision.approvers.describe()}"
    return decision.verdict.value


def _cacao_issues(path: Path) -> list[CacaoIssue]:
    """What is wrong with a CACAO document, or with the playbook it imports as (none: valid)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [CacaoIssue(str(path), "", "cacao-no-file", f"cannot read the document: {exc}")]
    try:
        import_document(text, str(path))
    except CacaoError as exc:
        return list(exc.issues)
    return []


def _playbooks_dir(given: Path | None) -> Path:
    """The directory the runtime would load: the given one, ./playbooks, or the bundled set."""
    return playbook_directory(given)


@app.command
def validate(*paths: Path, json_output: JsonFlag = False) -> int:
    """Validate playbook files; print one line per error, FILE:LINE: CODE: MESSAGE.

    A ``.json`` file is a CACAO 2.0 document: it is checked against the OASIS schemas and
    the semantic rules, and must import as a valid playbook; its errors read
    ``file: /json/pointer: rule: message``.

    Args:
        paths: files or directories (their *.yaml); default: ./playbooks, else the
            bundled playbooks, as the runtime chooses.
        json_output: print JSON (each file, valid or not, with its issues).

    Returns:
        0 when every file is valid, 1 otherwise.
    """
    files = playbook_files(paths or (_playbooks_dir(None),))
    if not files:
        print("no playbook files to validate")
        return FAILED
    results: list[dict[str, Any]] = []
    for path in files:
        if path.suffix == ".json":
            cacao = _cacao_issues(path)
            results.append(
                {"file": str(path), "valid": not cacao, "issues": [asdict(i) for i in cacao]}
            )
            if not json_output:
                for cacao_issue in cacao:
                    print(cacao_issue)
            continue
        try:
            load_playbook(path)
        except PlaybookError as exc:
            results.append(
                {"file": str(path), "valid": False, "issues": [asdict(i) for i in exc.issues]}
            )
            if not json_output:
                for issue in exc.issues:
                    print(issue)
        else:
            results.append({"file": str(path), "valid": True, "issues": []})
    failed = sum(not r["valid"] for r in results)
    if json_output:
        print_json({"valid": failed == 0, "files": results})
    elif not failed:
        print(f"{len(files)} playbook{'s' if len(files) != 1 else ''} valid")
    return FAILED if failed else OK


@app.command(usage="Usage: stanch playbook plan PLAYBOOK --alert FILE [--alert FILE ...] [OPTIONS]")
def plan(
    playbook: Path,
    /,
    *,
    alert: Annotated[tuple[Path, ...], Parameter(name="--alert", negative=())],
    tenant: str | None = None,
    incident_id: str | None = None,
    confirm: Annotated[tuple[str, ...], Parameter(name="--confirm", negative=())] = (),
    policies: Path | None = None,
    json_output: JsonFlag = False,
) -> int:
    """Dry run: the plans a playbook makes for the alerts, with policy's verdict on each.

    Touches nothing: lookups go to in-process lab simulators, no vendor is called, nothing is
    stored, Prefect is not started.

    Args:
        playbook: the playbook file.
        alert: an OCSF alert JSON file (repeatable; all alerts form one incident).
        tenant: the tenant (default: the alerts' tenant_uid, else demo).
        incident_id: the incident id to plan for (default: INC-<alert date>-0001).
        confirm: a confirm step's id to treat as confirmed (repeatable).
        policies: the policies directory (default: ./policies or the bundled set).
        json_output: print the plan as JSON (each stage's plans with policy's verdict).

    Returns:
        0 when planned; 1 for an invalid playbook, policy or template; 2 for bad alerts.
    """
    try:
        loaded = load_playbook(playbook)
    except PlaybookError as exc:
        for issue in exc.issues:
            print(issue)
        return FAILED
    try:
        incident = incident_of(read_alerts(alert), tenant=tenant, incident_id=incident_id)
    except (_BadAlert, ValidationError) as exc:
        print(f"bad alert: {exc}")
        return USAGE
    try:
        policy = policy_for_tenant(policy_directory(policies), incident.tenant)
        result = asyncio.run(_plan_in_lab(loaded, incident, confirmed=confirm))
    except PolicyError as exc:
        for policy_issue in exc.issues:
            print(policy_issue)
        return FAILED
    except PlaybookRunError as exc:
        print(f"cannot plan: {exc}")
        return FAILED
    if json_output:
        print_json(_plan_json(loaded, incident, policy, result))
        return OK
    print(
        f"{loaded.id} v{loaded.version} ({loaded.file}) for {incident.id}, tenant "
        f"{incident.tenant}, severity {incident.severity.name.lower()}"
    )
    print(f"policy: {policy.source}")
    print("dry run: lookups answered by the lab simulators; nothing was changed")
    for stage in (Stage.INVESTIGATE, Stage.CONTAIN, Stage.REMEDIATE, Stage.REPORT):
        planned = result.planned(stage) if stage in _ACTION_STAGES else []
        notes = [n for n in result.notes if n.stage is stage]
        if not planned and not notes:
            continue
        print(f"\n{stage.value}")
        decisions = decide(policy, planned, incident) if planned else []
        for action, decision in zip(planned, decisions, strict=True):
            p = action.plan
            params = f" ({_params(dict(p.parameters))})" if p.parameters else ""
            print(f"  {action.step}: {p.action} {p.target_label}{params} -> {_verdict(decision)}")
            print(f"    {decision.explanation}")
        for note in notes:
            print(f"  {note.step}: {note.status.replace('_', ' ')}: {note.text}")
    return 0


def _plan_json(
    loaded: LoadedPlaybook, incident: Incident, policy: Any, result: PlaybookPlan
) -> dict[str, Any]:
    stages: dict[str, Any] = {}
    for stage in (Stage.INVESTIGATE, Stage.CONTAIN, Stage.REMEDIATE, Stage.REPORT):
        planned = result.planned(stage) if stage in _ACTION_STAGES else []
        decisions = decide(policy, planned, incident) if planned else []
        stages[stage.value] = {
            "plans": [
                {
                    "step": a.step,
                    "action": a.plan.action,
                    "target": a.plan.target,
                    "target_label": a.plan.target_label,
                    "parameters": dict(a.plan.parameters),
                    "sha256": a.plan.sha256,
                    "verdict": d.verdict.value,
                    "approvals_required": d.approvals_required,
                    "explanation": d.explanation,
                }
                for a, d in zip(planned, decisions, strict=True)
            ],
            "notes": [
                {"step": n.step, "status": n.status, "text": n.text}
                for n in result.notes
                if n.stage is stage
            ],
        }
    return {
        "playbook": loaded.id,
        "version": loaded.version,
        "file": loaded.file,
        "incident_id": incident.id,
        "tenant": incident.tenant,
        "severity": incident.severity.name.lower(),
        "policy": policy.source,
        "stages": stages,
    }


def _expected_plans(case: dict[str, Any], stage: Stage) -> list[dict[str, Any]]:
    rows = (case.get("plans") or {}).get(stage.value) or []
    return [
        {
            "action": r["action"],
            "target": str(r["target"]),
            "parameters": dict(r.get("parameters") or {}),
        }
        for r in rows
    ]


def _produced(result: PlaybookPlan, stage: Stage) -> list[dict[str, Any]]:
    return [
        {"action": p.action, "target": p.target_label, "parameters": dict(p.parameters)}
        for p in result.plans(stage)
    ]


def check_case(
    playbook: LoadedPlaybook, playbooks: list[LoadedPlaybook], case: dict[str, Any], folder: Path
) -> list[str]:
    """Run one example case; return what differs from the expectation (empty: passed)."""
    alerts = read_alerts([folder / name for name in case["alerts"]])
    incident = incident_of(alerts, tenant=case.get("tenant"))
    problems: list[str] = []
    chosen = route_incident(incident, playbooks).chosen
    expected_route = case.get("routes_to", playbook.id)
    if (chosen.id if chosen else None) != expected_route:
        problems.append(
            f"routes to {chosen.id if chosen else 'nothing'}, expected {expected_route}"
        )
    result = asyncio.run(
        _plan_in_lab(
            playbook,
            incident,
            confirmed=case.get("confirmed", ()),
            absent=case.get("absent", ()),
        )
    )
    for stage in _ACTION_STAGES:
        want, got = _expected_plans(case, stage), _produced(result, stage)
        if want != got:
            problems.append(f"{stage.value}: expected {json.dumps(want)}")
            problems.append(f"{' ' * len(stage.value)}       got {json.dumps(got)}")
    for status in ("not_executed", "waiting", "skipped"):
        if status in case:
            got_ids = list(dict.fromkeys(n.step for n in result.notes if n.status == status))
            if list(case[status]) != got_ids:
                problems.append(f"{status}: expected {case[status]}, got {got_ids}")
    return problems


@app.command
def test(*, playbooks: Path | None = None, json_output: JsonFlag = False) -> int:
    """Run every playbook on its examples (playbooks/examples/ID/) and compare the plans.

    Each expected.yaml lists cases: the alert files that form the incident and the plans
    expected per stage (action, target label, parameters).

    Args:
        playbooks: the playbooks directory (default: ./playbooks, else the bundled set).
        json_output: print the cases and their results as JSON.

    Returns:
        0 when every case passes, 1 otherwise.
    """
    directory = _playbooks_dir(playbooks)
    try:
        loaded = load_playbooks(directory)
    except PlaybookError as exc:
        if json_output:
            print_json({"passed": False, "issues": [asdict(i) for i in exc.issues], "cases": []})
        else:
            for issue in exc.issues:
                print(issue)
        return FAILED
    results: list[dict[str, Any]] = []
    for playbook in loaded:
        folder = directory / "examples" / playbook.id
        expected = folder / "expected.yaml"
        if not expected.is_file():
            results.append(_case(playbook.id, None, [f"no examples ({expected} is missing)"]))
            continue
        spec = yaml.safe_load(expected.read_text(encoding="utf-8")) or {}
        for case in spec.get("cases") or []:
            try:
                problems = check_case(playbook, loaded, case, folder)
            except (_BadAlert, ValidationError, PlaybookRunError, KeyError) as exc:
                problems = [f"{type(exc).__name__}: {exc}"]
            results.append(_case(playbook.id, str(case.get("name", "?")), problems))
        if not spec.get("cases"):
            results.append(_case(playbook.id, None, [f"{expected} lists no cases"]))
    failures = sum(not r["passed"] for r in results)
    cases = sum(r["case"] is not None for r in results)
    if json_output:
        print_json({"passed": failures == 0, "playbooks": len(loaded), "cases": results})
        return FAILED if failures else OK
    for r in results:
        name = f"{r['playbook']}: {r['case']}" if r["case"] is not None else r["playbook"]
        if r["passed"]:
            print(f"ok   {name}")
        elif r["case"] is None:
            print(f"FAIL {name}: {r['problems'][0]}")
        else:
            print(f"FAIL {name}")
            for line in r["problems"]:
                print(f"  {line}")
    print(f"{len(loaded)} playbooks, {cases} cases, {failures} failed")
    return FAILED if failures else OK


def _case(playbook: str, case: str | None, problems: list[str]) -> dict[str, Any]:
    return {"playbook": playbook, "case": case, "passed": not problems, "problems": problems}


@app.command
def route(
    *alerts: Path,
    playbooks: Path | None = None,
    tenant: str | None = None,
    json_output: JsonFlag = False,
) -> int:
    """Say which playbook an incident made of these alerts goes to, and why.

    Args:
        alerts: OCSF alert JSON files (together, one incident).
        playbooks: the playbooks directory (default: ./playbooks, else the bundled set).
        tenant: the tenant (default: the alerts' tenant_uid, else demo).
        json_output: print the choice and every candidate's reasons as JSON.

    Returns:
        0 when a playbook was chosen, 1 when none fits or a playbook is invalid, 2 for bad
        alerts.
    """
    try:
        loaded = load_playbooks(_playbooks_dir(playbooks))
    except PlaybookError as exc:
        for issue in exc.issues:
            print(issue)
        return FAILED
    try:
        incident = incident_of(read_alerts(alerts), tenant=tenant)
    except (_BadAlert, ValidationError) as exc:
        print(f"bad alert: {exc}")
        return USAGE
    decision = route_incident(incident, loaded)
    if json_output:
        print_json(
            {
                "chosen": decision.chosen.id if decision.chosen else None,
                "candidates": [
                    {"playbook": c.playbook.id, "fits": c.fits, "reasons": list(c.reasons)}
                    for c in decision.candidates
                ],
            }
        )
    else:
        for line in decision.explain():
            print(line)
    return OK if decision.chosen else FAILED
