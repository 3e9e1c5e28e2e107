"""Loading rules of engagement: parse and validate a file, find a tenant's."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from flows.policy.errors import _CODES, PolicyError, PolicyIssue
from flows.policy.fields import ActionCounter
from flows.policy.rules import RulesOfEngagement
from flows.policy.schema import _FIELD_NAMES, Approvers, RulesFile, _semantic_issues
from flows.yaml_lines import LineLoader, YamlLines


def _issue_from_error(error: Any, lines: YamlLines, file: str) -> PolicyIssue:
    # "[key]" marks an error in a dict key rather than its value: the key's line is the same.
    path = tuple(str(p) for p in error["loc"] if p != "[key]")
    kind = error["type"]
    if kind in _CODES:
        code, reason = kind, error["msg"]
    elif kind == "extra_forbidden":
        hint = difflib.get_close_matches(path[-1], _FIELD_NAMES, n=1) if path else []
        code = "unknown-field"
        reason = "unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else "")
    elif kind == "missing":
        code, reason = "missing-field", "required field is missing"
    else:
        code, reason = "invalid-value", error["msg"]
    return PolicyIssue(file, lines.line(path), ".".join(path), code, reason)


def parse_policy(text: str, *, file: str = "<inline>") -> RulesFile:
    """Validate policy YAML text.

    Args:
        text: the YAML document.
        file: how to name the source in errors.

    Returns:
        The validated rules.

    Raises:
        PolicyError: with every issue found, each with its line.
    """
    loader = LineLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError([PolicyIssue(file, line, "", "yaml-syntax", problem)]) from exc
    finally:
        loader.dispose()
    if node is None or not isinstance(data, dict):
        raise PolicyError(
            [PolicyIssue(file, 1, "", "not-a-mapping", "a policy is a mapping of fields")]
        )
    lines = YamlLines()
    lines.walk(node)
    issues = [
        PolicyIssue(file, line, ".".join(path), "duplicate-key", f"{path[-1]!r} appears twice")
        for path, line in lines.duplicates
    ]
    try:
        rules = RulesFile.model_validate(data)
    except ValidationError as exc:
        issues.extend(_issue_from_error(e, lines, file) for e in exc.errors())
        raise PolicyError(sorted(issues, key=lambda i: i.line)) from exc
    issues.extend(
        PolicyIssue(file, lines.line(path), ".".join(path), code, reason)
        for path, code, reason in _semantic_issues(rules)
    )
    stem = Path(file).stem
    if rules.tenant is not None and file != "<inline>" and stem != rules.tenant:
        issues.append(
            PolicyIssue(
                file,
                lines.line(("tenant",)),
                "tenant",
                "tenant-mismatch",
                f"file is for tenant {stem!r} but says tenant: {rules.tenant}",
            )
        )
    if issues:
        raise PolicyError(sorted(issues, key=lambda i: i.line))
    return rules


def load_policy(path: Path | str, *, counter: ActionCounter | None = None) -> RulesOfEngagement:
    """Load and validate one policy file.

    Args:
        path: the YAML file.
        counter: how to count recent actions for blast-radius budgets (see
            :meth:`RulesOfEngagement.decide`).

    Returns:
        The evaluator for that file.

    Raises:
        PolicyError: the file is missing or invalid (code ``no-policy`` or a validation code).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = f"cannot read policy: {exc.strerror or exc}"
        raise PolicyError([PolicyIssue(str(path), 0, "", "no-policy", reason)]) from exc
    return RulesOfEngagement(parse_policy(text, file=str(path)), source=str(path), counter=counter)


def policy_for_tenant(
    directory: Path | str, tenant: str, *, counter: ActionCounter | None = None
) -> RulesOfEngagement:
    """Load ``<tenant>.yaml`` from ``directory``, or ``default.yaml`` when there is none.

    Args:
        directory: the policies directory.
        tenant: the tenant id (also used as the file name, so it is checked first).
        counter: passed to :func:`load_policy`.

    Returns:
        The tenant's evaluator.

    Raises:
        PolicyError: ``bad-tenant`` for an impossible tenant id, ``no-policy`` when neither
            file exists, or the validation issues of the file found.
    """
    directory = Path(directory)
    # The tenant names a file: refuse anything that could step outside the directory.
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", tenant):
        reason = f"{tenant!r} is not a tenant id"
        raise PolicyError([PolicyIssue(str(directory), 0, "", "bad-tenant", reason)])
    own = directory / f"{tenant}.yaml"
    return load_policy(own if own.is_file() else directory / "default.yaml", counter=counter)


def fail_safe_policy(
    tenant: str, problem: PolicyError, *, approvers: Approvers | None = None
) -> RulesOfEngagement:
    """The rules for a tenant whose policy cannot be loaded: every action needs a person.

    Never unattended: with no rule for any action, each one asks for one approver. The
    approvers are ``approvers`` (those of the directory's ``default.yaml`` when that one
    loads, see :func:`policy_or_fail_safe`); with none, nobody can approve, so every
    request expires, denied, at its deadline. The tenant's own list is in the file that
    failed, and no operator or Slack user is trusted by default.
    """
    nobody = Approvers.model_construct(slack_users=(), cli=False, cli_users=(), prefect_ui=False)
    rules = RulesFile.model_construct(version=1, approvers=approvers or nobody, **_rules_defaults())
    first = problem.issues[0] if problem.issues else None
    source = f"fail-safe rules for {tenant} ({first})" if first else f"fail-safe rules for {tenant}"
    return RulesOfEngagement(rules, source=source, checked=approvers is not None)


def _rules_defaults() -> dict[str, Any]:
    # Every field of a rules file but its version and approvers, at its default.
    return {
        name: field.get_default(call_default_factory=True)
        for name, field in RulesFile.model_fields.items()
        if name not in ("version", "approvers")
    }


def policy_or_fail_safe(
    directory: Path | str, tenant: str, *, counter: ActionCounter | None = None
) -> tuple[RulesOfEngagement, PolicyError | None]:
    """The tenant's rules, or — when they cannot be loaded — :func:`fail_safe_policy`.

    Returns:
        The rules to decide by, and the error that made them fail-safe (``None`` when the
        tenant's own policy loaded).
    """
    try:
        return policy_for_tenant(directory, tenant, counter=counter), None
    except PolicyError as exc:
        fallback = Path(directory) / "default.yaml"
        approvers = None
        if not any(Path(issue.file) == fallback for issue in exc.issues):
            try:
                approvers = load_policy(fallback).rules.approvers
            except PolicyError:
                approvers = None
        return fail_safe_policy(tenant, exc, approvers=approvers), exc
