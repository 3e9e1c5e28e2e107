"""``stanch policy``: ask the rules of engagement what they would decide, or validate them.

Output is plain text, one fact a line, so that ``--validate`` lines (``file:line: code:
message``) can be read by editors and CI the way compiler errors are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

from flows.models import Verdict
from flows.policy import (
    CONTAINMENT_ACTIONS,
    PolicyError,
    approval_terms,
    load_policy,
    policy_for_tenant,
)
from flows.settings import load_settings
from integrations.capabilities import Capability
from integrations.ocsf import SeverityId

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
    policies: Path = Path("policies"),
    validate: bool = False,
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
        policies: the policies directory.
        validate: validate files instead of deciding; exit 1 on any error.

    Returns:
        0 when the decision was shown or every file is valid; 1 for an invalid policy; 2 for
        a usage error.
    """
    if validate:
        return _validate(list(files) or sorted(policies.glob("*.yaml")))
    if files:
        print("files are only read with --validate")
        return 2
    if tenant is None or action is None or target is None or severity is None:
        print("check needs --tenant, --action, --target and --severity (or --validate)")
        return 2
    if severity.lower() not in _SEVERITIES:
        print(f"unknown severity {severity!r}; use one of {', '.join(_SEVERITIES)}")
        return 2
    try:
        policy = policy_for_tenant(policies, tenant)
    except PolicyError as exc:
        for issue in exc.issues:
            print(issue)
        return 1
    if stage not in (None, "contain", "remediate"):
        print(f"unknown stage {stage!r}; use contain or remediate")
        return 2
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
    print(f"policy: {policy.source}")
    print(f"verdict: {decision.verdict.value}")
    print(f"approvals required: {terms.required_approvals if approval else 0}")
    print(f"approvers: {terms.approvers} (via {', '.join(terms.channels)})")
    print(f"timeout: {terms.explained}")
    print(decision.explanation)
    return 0


def _validate(files: list[Path]) -> int:
    if not files:
        print("no policy files to validate")
        return 1
    failed = 0
    for path in files:
        try:
            load_policy(path)
        except PolicyError as exc:
            failed += 1
            for issue in exc.issues:
                print(issue)
    print(f"{len(files) - failed} of {len(files)} policy files valid")
    return 1 if failed else 0
