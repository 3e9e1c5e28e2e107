"""The report: attacker-controlled alert text stays inert in Markdown and HTML."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from flows.models import IncidentOutcome, Investigation, Stage, StageRecord
from flows.record import md_escape, render_html, render_markdown
from tests.flows.factories import incident

EVIL = "<!channel> [click here](http://evil.example) <script>alert(1)</script> ![x](http://e/i.png)"


def _outcome() -> IncidentOutcome:
    inc = incident()
    alert = inc.alerts[0]
    info = alert.finding_info.model_copy(update={"title": EVIL})
    evil_alert = alert.model_copy(update={"finding_info": info})
    inc = inc.model_copy(update={"alerts": [evil_alert, *inc.alerts[1:]]})
    now = datetime.now(UTC)
    return IncidentOutcome(
        incident=inc,
        flow_run_id="run-1",
        investigation=Investigation(verdict="true_positive", risk_score=90, reasons=[EVIL]),
        stages=[
            StageRecord(stage=Stage.DETECT, state="completed", started_at=now, finished_at=now)
        ],
        actions=[],
        clocks={"detect": 1.0, "acknowledge": None, "contain": None, "resolve": None},
    )


def test_md_escape_neutralises_links_images_and_html() -> None:
    """Given hostile text, When escaped for Markdown, Then no link, image or tag survives."""
    escaped = md_escape(EVIL)
    assert "](" not in escaped
    assert "<" not in escaped and ">" not in escaped
    assert "\\[click here\\]\\(http://evil\\.example\\)" in escaped
    assert "\n" not in md_escape("line one\nline two")


def test_markdown_report_keeps_alert_text_as_text() -> None:
    """Given an alert title full of markup, When the Markdown report renders,
    Then the text appears escaped and no live link or tag is emitted."""
    text = render_markdown(_outcome())
    assert "[click here](http://evil.example)" not in text
    assert "<script>" not in text
    assert "&lt;script&gt;" in text


def test_html_report_is_autoescaped_and_self_contained() -> None:
    """Given the same outcome, When the HTML report renders,
    Then the title is escaped and the page loads nothing from elsewhere."""
    page = render_html(_outcome())
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "src=" not in page and "<link" not in page


def test_reports_after_the_first_compile_no_template(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given one report already rendered in this process,
    When the next incident's Markdown and HTML reports are rendered,
    Then no template is compiled again (a fresh environment per report recompiled both,
    about 60 ms), and the HTML one is still autoescaped and the Markdown one escaped."""
    from jinja2 import Environment

    render_markdown(_outcome())
    render_html(_outcome())
    compiled: list[str | None] = []
    compile_source = Environment.compile

    def counting(self: Environment, source: Any, name: str | None = None, *a: Any, **k: Any) -> Any:
        compiled.append(name)
        return compile_source(self, source, name, *a, **k)

    monkeypatch.setattr(Environment, "compile", counting)
    markdown, html = render_markdown(_outcome()), render_html(_outcome())
    assert compiled == []
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "[click here](http://evil.example)" not in markdown
