"""Playbook templates: jinja2 in an immutable sandbox, compiled at load, rendered on data.

A string that is exactly one ``{{ expression }}`` evaluates to the expression's value (a
list for ``for_each``, a number for ``ttl_seconds``); any other string renders to text.
Values in the context are data: jinja2 never renders its own output again, so alert text
such as ``{{ 7*7 }}`` comes out as those characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2 import Template as _JinjaTemplate
from jinja2.exceptions import SecurityError
from jinja2.meta import find_undeclared_variables
from jinja2.runtime import Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flows.models import Incident
from flows.playbook.hunting import hunt_facts
from integrations.ocsf import ObservableType

CONTEXT_ROOTS: frozenset[str] = frozenset({"incident", "alerts", "steps", "tenant", "hunt"})
"""The variables every template may use; ``item`` is added inside ``for_each`` steps."""

# autoescape off: the output is plan parameters, not HTML; Slack escaping happens where
# messages are built.
ENVIRONMENT = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
)
_GLOBALS = frozenset(ENVIRONMENT.globals)
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class TemplateSyntax(ValueError):
    """A template does not parse; ``line`` is the line inside the template (1-based)."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class RenderError(ValueError):
    """A template failed at run time (an undefined variable, a refused operation)."""


def is_template(text: str) -> bool:
    """Whether ``text`` contains jinja2 markup at all (plain text is kept as is)."""
    return "{{" in text or "{%" in text or "{#" in text


@dataclass(frozen=True)
class Template:
    """One compiled template.

    Attributes:
        source: the text as written in the playbook.
        native: ``True`` for a single ``{{ expression }}``, which evaluates to a value.
        roots: the top-level variables it reads (``incident``, ``steps``, ``item``, ...).
        steps: the step ids it reads through ``steps.<id>``.
    """

    source: str
    native: bool
    roots: frozenset[str]
    steps: frozenset[str]
    _text: _JinjaTemplate | None
    _expression: Any

    def render(self, context: Mapping[str, Any]) -> Any:
        """Evaluate against ``context``: a value for a single expression, else text.

        Raises:
            RenderError: an undefined variable or attribute, or a sandbox refusal.
        """
        try:
            if self._expression is not None:
                value = self._expression(**context)
                _no_undefined(value, self.source)
                return value
            assert self._text is not None
            return self._text.render(**context)
        except UndefinedError as exc:
            raise RenderError(f"{self.source!r}: {exc}") from exc
        except SecurityError as exc:
            raise RenderError(f"{self.source!r}: refused by the sandbox: {exc}") from exc
        except (TypeError, ValueError, LookupError, ArithmeticError) as exc:
            raise RenderError(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc


def _no_undefined(value: Any, source: str) -> None:
    # A bare undefined name in an expression comes back as an Undefined object instead of
    # raising; StrictUndefined only raises once the value is used.
    if isinstance(value, Undefined):
        raise UndefinedError(f"{source.strip()} is undefined")
    if isinstance(value, list | tuple):
        for element in value:
            _no_undefined(element, source)


def _step_references(tree: nodes.Node) -> set[str]:
    found: set[str] = set()
    for node in tree.find_all(nodes.Getattr):
        assert isinstance(node, nodes.Getattr)
        if isinstance(node.node, nodes.Name) and node.node.name == "steps":
            found.add(node.attr)
    for item in tree.find_all(nodes.Getitem):
        assert isinstance(item, nodes.Getitem)
        key = item.arg
        named = isinstance(item.node, nodes.Name) and item.node.name == "steps"
        if named and isinstance(key, nodes.Const) and isinstance(key.value, str):
            found.add(key.value)
    return found


def compile_template(source: str) -> Template:
    """Parse and compile one template.

    Raises:
        TemplateSyntax: the template does not parse.
    """
    single = _SINGLE.match(source)
    expr = single["expr"] if single else ""
    native = single is not None and "{{" not in expr and "}}" not in expr
    try:
        tree = ENVIRONMENT.parse(source)
        if native:
            expression = ENVIRONMENT.compile_expression(expr, undefined_to_none=False)
            text = None
        else:
            expression = None
            text = ENVIRONMENT.from_string(tree)
    except TemplateSyntaxError as exc:
        raise TemplateSyntax(exc.message or str(exc), exc.lineno) from exc
    roots = frozenset(find_undeclared_variables(tree) - _GLOBALS)
    return Template(source, native, roots, frozenset(_step_references(tree)), text, expression)


def _alert_data(incident: Incident) -> list[dict[str, Any]]:
    return [alert.model_dump(mode="json", exclude_none=True) for alert in incident.alerts]


def build_context(incident: Incident, steps: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The documented template context, made of plain data only.

    Nothing here comes from settings, so no credential can reach a template; alert fields
    are strings and numbers, never templates.

    Args:
        incident: the incident being answered.
        steps: ``{step_id: {"result": ..., "missing": [...], "skipped": bool}}`` so far.

    Returns:
        ``{"incident", "alerts", "steps", "tenant", "hunt"}``; ``hunt`` gathers the
        hosts every ``edr.hunt`` step so far found (:func:`hunt_facts`).
    """
    tactics: dict[str, None] = {}
    for alert in incident.alerts:
        for attack in alert.finding_info.attacks:
            if attack.tactic is not None:
                tactics.setdefault(attack.tactic.uid, None)
    return {
        "incident": {
            "id": incident.id,
            "tenant": incident.tenant,
            "title": incident.title,
            "severity": incident.severity.name.lower(),
            "severity_id": int(incident.severity),
            "first_seen": incident.first_seen.isoformat(),
            "hostnames": incident.hostnames,
            "users": incident.users,
            "sha256s": incident.sha256s,
            "ips": incident.entities(ObservableType.IP_ADDRESS),
            "external_ips": incident.external_ips,
            "urls": incident.entities(ObservableType.URL_STRING),
            "email_addresses": incident.entities(ObservableType.EMAIL_ADDRESS),
            "techniques": incident.techniques,
            "tactics": list(tactics),
        },
        "alerts": _alert_data(incident),
        "steps": dict(steps or {}),
        "tenant": incident.tenant,
        "hunt": hunt_facts(steps or {}),
    }


def walk_strings(value: Any, path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], str]]:
    """Every string leaf of a YAML value with its path (for template and secret checks)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            yield from walk_strings(inner, (*path, str(key)))
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            yield from walk_strings(inner, (*path, str(i)))
