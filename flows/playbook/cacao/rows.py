"""What an import did with each CACAO step, and the checks every imported playbook passes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from flows.playbook.cacao.validate import CacaoError, CacaoIssue, CacaoRule
from flows.playbook.loader import LoadedPlaybook, PlaybookError, parse_playbook
from flows.playbook.templates import is_template


@dataclass(frozen=True)
class MappingRow:
    """One CACAO step and what it became.

    Attributes:
        cacao: the workflow key (``action--…``), or ``""`` for the playbook itself.
        name: the step's name (or its type when it has none).
        stanch: the stanch steps it became (none for structure and left-out steps).
        status: ``action`` (planned, through policy and approval), ``lookup`` (read-only),
            ``manual``, ``hunt`` or ``notify`` (listed, never executed), ``structure``
            (start, end, parallel, conditions: folded into order and confirmations),
            ``left out`` or ``dropped``.
        detail: why, in words a SOC lead can act on.
    """

    cacao: str
    name: str
    stanch: tuple[str, ...]
    status: str
    detail: str

    def as_json(self) -> dict[str, object]:
        """The row as a JSON object (for ``--json``)."""
        return {
            "cacao_step": self.cacao,
            "name": self.name,
            "stanch_steps": list(self.stanch),
            "status": self.status,
            "detail": self.detail,
        }


def literal(text: str) -> str:
    """``text`` as a template that renders to exactly ``text`` (foreign text is never code)."""
    return text.replace("{", "{{ '{' }}") if is_template(text) else text


def one_line(text: str, limit: int = 200) -> str:
    """Whitespace collapsed to single spaces, cut at ``limit`` characters."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def parse_imported(
    text: str, file: str, pointers: Mapping[str, str], fallback: str
) -> LoadedPlaybook:
    """Validate the YAML an import produced; issues point back into the CACAO document.

    Args:
        text: the YAML.
        file: the CACAO file, for the issues.
        pointers: the JSON pointer of the CACAO step each stanch step came from.
        fallback: the pointer for issues that concern no step.

    Raises:
        CacaoError: ``cacao-stanch`` issues, one per playbook issue.
    """
    try:
        return parse_playbook(text)
    except PlaybookError as exc:
        raise CacaoError(
            [
                CacaoIssue(
                    file,
                    pointers.get(issue.step, fallback),
                    CacaoRule.STANCH,
                    f"the imported playbook is not valid: {issue.code}: "
                    + (f"step {issue.step}: " if issue.step else "")
                    + issue.message,
                )
                for issue in exc.issues
            ]
        ) from exc
