"""``stanch policy``: ask the rules of engagement what they would decide, or validate them.

Output is plain text, one fact a line, so that ``--validate`` lines (``file:line: code:
message``) can be read by editors and CI the way compiler errors are.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from cyclopts import App, Parameter

from flows.models import Verdict
from flows.policy import (
    CONTAINMENT_ACTIONS,
    PolicyError,
    approval_terms,
    load_policy,
    policy_for_tenant,
)
from flows.settings import load_settings, policy_directory
from integrations.capabilities import Capability
from integrations.ocsf import SeverityId
from stanch.cli_support import FAILED, OK, USAGE, print_json

app = App(name="policy", help="Per-tenant rules of engagement.")

_SEVERITIES = ("informational", "low", "medium", "high", "critical", "fatal")


@app.command
def check(
    *files: Path,
    tenant: str | None = None,
    action: str | None = None,
    target: str | None = None,
    severity: str | None = None,
    user: Annotated[tuple[str, ...], Parameter(name="--user", negative=())] = (),
    recent: int = 0,
    stage: str | None = None,
    policies: Path | None = None,
    validate: Annotated[bool, Parameter(negative=())] = False,
    json_output: Annotated[bool, Parameter(name="--json", negative=())] = False,
) -> int:
    """Show what a tenant's policy decides for one action, or validate policy files.

    Args:
        files: with --validate, the files to check (default: every *.yaml in --policies).
        tenant: the tenant whose policy applies (TENANT.yaml, else default.yaml).
        action: CAPABILITY.VERB, e.g. identity.suspend_user.
        target: hostname, user login or IP address the action would touch.
        severity: the incident's severity (informational, low, medium, high, critical, fatal).
        user: a user the incident names, for group conditions (repeatable); identity actions
            use the target.
        recent: how many of this action already ran in the tenant within its budget window.
        stage: contain or remediate, the stage the action runs in (default: contain for the
            containment verbs, else remediate); anything in contain counts as containment.
        policies: the policies directory (default: ./policies, else the bundled set, as
            the runtime chooses).
        validate: validate files instead of deciding; exit 1 on any error.
        json_output: print JSON instead of text.

    Returns:
        0 when the decision was shown or every file is valid; 1 for an invalid policy; 2 for
        a usage error.
    """
    try:
        directory = policy_directory(policies)
    except FileNotFoundError as exc:
        print(exc)
        return USAGE
    if validate:
        return _validate(list(files) or sorted(directory.glob("*.yaml")), json_output)
    if files:
        print("files are only read with --validate")
        return USAGE
    if tenant is None or action is None or target is None or severity is None:
        print("check needs --tenant, --action, --target and --severity (or --validate)")
        return USAGE
    if severity.lower() not in _SEVERITIES:
        print(f"unknown severity {severity!r}; use one of {', '.join(_SEVERITIES)}")
        return USAGE
    try:
        policy = policy_for_tenant(directory, tenant)
    except PolicyError as exc:
        if json_output:
            print_json({"valid": False, "issues": [asdict(i) for i in exc.issues]})
        else:
            for issue in exc.issues:
                print(issue)
        return FAILED
    if stage not in (None, "contain", "remediate"):
        print(f"unknown stage {stage!r}; use contain or remediate")
        return USAGE
    identity = action.partition(".")[0] == Capability.IDENTITY.value
    decision = policy.evaluate(
        tenant=tenant,
        action=action,
        target=target,
        severity=SeverityId[severity.upper()],
        users=(target, *user) if identity else user,
        containment=stage == "contain" or action in CONTAINMENT_ACTIONS,
        recent_actions=recent,
    )
    # The terms the flow would put in its approval request: one function decides both.
    terms = approval_terms([decision], longest=load_settings().approval_timeout_cap)
    approval = decision.verdict is Verdict.APPROVAL
    required = terms.required_approvals if approval else 0
    if json_output:
        print_json(
            {
                "policy": policy.source,
                "verdict": decision.verdict.value,
                "approvals_required": required,
                "approvers": terms.approvers,
                "channels": list(terms.channels),
                "timeout_seconds": terms.timeout.total_seconds(),
                "on_timeout": terms.on_timeout,
                "timeout": terms.explained,
                "explanation": decision.explanation,
            }
        )
        return OK
    print(f"policy: {policy.source}")
    print(f"verdict: {decision.verdict.value}")
    print(f"approvals required: {required}")
    print(f"approvers: {terms.approvers} (via {', '.join(terms.channels)})")
    print(f"timeout: {terms.explained}")
    print(decision.explanation)
    return OK


def _validate(files: list[Path], json_output: bool) -> int:
    if not files:
        print("no policy files to validate")
        return FAILED
    results: list[dict[str, Any]] = []
    for path in files:
        try:
            load_policy(path)
        except PolicyError as exc:
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
    else:
        print(f"{len(files) - failed} of {len(files)} policy files valid")
    return FAILED if failed else OK
