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


def policy_directory(configured: Path | None) -> Path:
    """Where the rules of engagement are: the setting, else ``./policies``, else the bundled set.

    The bundled set is the repository's ``policies/`` (a checkout or an editable install)
    or the copy packaged into the wheel as ``flows/_policies``.
    """
    if configured is not None:
        return configured
    package = Path(flows.__file__).resolve().parent
    for candidate in (Path("policies"), package / "_policies", package.parent / "policies"):
        if (candidate / "default.yaml").is_file():
            return candidate
    raise FileNotFoundError("no policies directory: set STANCH_POLICIES_DIR")
