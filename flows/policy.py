"""The policy seam: how the lifecycle asks whether a plan may run, and what it is told.

The rules themselves are per-tenant YAML (``policies/``), loaded and applied by
:mod:`flows.roe`; :func:`policy_directory` finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import flows
from flows.models import ActionPlan, Incident, Verdict


@dataclass(frozen=True)
class PolicyDecision:
    """Policy's verdict on one plan, and why."""

    verdict: Verdict
    reason: str
    approvals_required: int = 0


class Policy(Protocol):
    """Decides how much authority a plan needs."""

    def decide(self, plan: ActionPlan, incident: Incident) -> PolicyDecision: ...


def content_directory(name: str, configured: Path | None, marker: str) -> Path:
    """Where SOC-authored content lives: the setting, else ``./<name>``, else the bundled set.

    The bundled set is the repository's ``<name>/`` (a checkout or an editable install)
    or the copy packaged into the wheel as ``flows/_<name>``. ``marker`` is a glob that
    a usable directory matches.
    """
    if configured is not None:
        return configured
    package = Path(flows.__file__).resolve().parent
    for candidate in (Path(name), package / f"_{name}", package.parent / name):
        if any(candidate.glob(marker)):
            return candidate
    raise FileNotFoundError(f"no {name} directory: set STANCH_{name.upper()}_DIR")


def policy_directory(configured: Path | None) -> Path:
    """Where the rules of engagement are (``default.yaml`` and ``<tenant>.yaml``)."""
    return content_directory("policies", configured, "default.yaml")


def playbook_directory(configured: Path | None) -> Path:
    """Where the playbooks are (``<id>.yaml``)."""
    return content_directory("playbooks", configured, "*.yaml")
