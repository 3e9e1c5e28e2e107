"""Sandboxed templates: compiled at load, rendered on data, alert text never evaluated."""

from __future__ import annotations

import pytest

from flows.playbook.templates import (
    CONTEXT_ROOTS,
    RenderError,
    TemplateSyntax,
    build_context,
    compile_template,
)
from tests.playbooks.helpers import alert, incident


def test_alert_text_is_data_not_a_template() -> None:
    """Given an alert whose title is itself jinja markup,
    When a template inserts the title,
    Then the markup comes out as the same characters, not evaluated."""
    hostile = "{{ 7*7 }} {% for x in range(3) %}boom{% endfor %}"
    context = build_context(incident(alert(title=hostile)))
    out = compile_template("title: {{ alerts[0].finding_info.title }}").render(context)
    assert out == f"title: {hostile}"


def test_undefined_variables_fail_at_render_time() -> None:
    """Given a template reading a field the incident does not have,
    When it is rendered,
    Then RenderError (StrictUndefined), not an empty string."""
    template = compile_template("{{ incident.no_such_field }} tail")
    with pytest.raises(RenderError, match="no_such_field"):
        template.render(build_context(incident()))


def test_an_undefined_single_expression_fails_too() -> None:
    """Given a single-expression template of an undefined attribute,
    When it is rendered,
    Then RenderError rather than an Undefined value leaking into a plan."""
    with pytest.raises(RenderError):
        compile_template("{{ incident.nothing }}").render(build_context(incident()))


@pytest.mark.parametrize(
    "source",
    [
        "{{ incident.hostnames.append('x') }}",
        "{{ incident.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
    ],
)
def test_the_sandbox_refuses_mutation_and_internals(source: str) -> None:
    """Given templates that mutate the context or reach Python internals,
    When they are rendered,
    Then RenderError; the context is unchanged."""
    context = build_context(incident())
    with pytest.raises(RenderError):
        compile_template(source).render(context)
    assert context["incident"]["hostnames"] == ["WS-0001"]


def test_a_single_expression_keeps_its_type() -> None:
    """Given single-expression templates for a list and a number,
    When they are rendered,
    Then the list and the int come back, while mixed text stays text."""
    context = build_context(incident(alert(ips=("203.0.113.5",))))
    assert compile_template("{{ incident.external_ips }}").render(context) == ["203.0.113.5"]
    assert compile_template("{{ 24 * 3600 }}").render(context) == 86400
    assert compile_template("ttl {{ 24 * 3600 }}").render(context) == "ttl 86400"


def test_syntax_errors_are_found_at_compile_time_with_their_line() -> None:
    """Given a template whose second line has an unclosed tag,
    When it is compiled,
    Then TemplateSyntax with line 2, before anything runs."""
    with pytest.raises(TemplateSyntax) as caught:
        compile_template("fine\n{% if incident %} never closed")
    assert caught.value.line == 2


def test_roots_and_step_references_are_known_at_compile_time() -> None:
    """Given a template reading incident, steps and item,
    When it is compiled,
    Then its roots and the steps it reads are listed (globals such as range are not)."""
    template = compile_template(
        "{{ steps.hosts.result }} {{ steps['users'].missing }} {{ item }} {{ range(2) }}"
    )
    assert template.roots == {"steps", "item"}
    assert template.steps == {"hosts", "users"}


def test_the_context_holds_only_the_documented_roots() -> None:
    """Given any incident,
    When the context is built,
    Then it has exactly incident, alerts, steps and tenant, all plain data."""
    context = build_context(incident(tenant="acme"))
    assert set(context) == CONTEXT_ROOTS
    assert context["tenant"] == "acme"
    assert isinstance(context["alerts"][0], dict)
    assert context["incident"]["severity"] == "high"
    assert "settings" not in str(context.keys())
