"""Routing: the most specific fitting playbook, with reasons for every candidate."""

from __future__ import annotations

from flows.playbook import LoadedPlaybook, load_playbooks, route
from flows.playbook.routing import alert_sources
from tests.playbooks.helpers import PLAYBOOKS, alert, incident, playbook

LIBRARY = load_playbooks(PLAYBOOKS)


def _inline(pid: str, trigger: str) -> LoadedPlaybook:
    head = f"id: {pid}\nversion: 1\ntitle: t\nowner: o\ntrigger:\n{trigger}"
    return playbook("steps:\n  report:\n    - id: s\n      manual: x\n", head=head)


def test_ransomware_with_c2_and_account_alerts_routes_to_ransomware() -> None:
    """Given a critical EDR alert with Impact and C2 tactics and an Okta sign-in alert,
    When routed over the library,
    Then ransomware is chosen although c2-beacon and compromised-account also fit."""
    edr = alert(severity=5, attacks=(("TA0040", "T1486"), ("TA0011", "T1071.001")))
    idp = alert(uid="a2", vendor="Okta", product="Okta System Log", hostname=None,
                attacks=(("TA0001", "T1078"),))  # fmt: skip
    decision = route(incident(edr, idp), LIBRARY)
    assert decision.chosen is not None and decision.chosen.id == "ransomware"
    fitting = [c.playbook.id for c in decision.candidates if c.fits]
    assert fitting == ["ransomware", "compromised-account", "c2-beacon"]


def test_a_low_alert_routes_to_triage_only() -> None:
    """Given a low-severity alert with no ATT&CK,
    When routed,
    Then triage-low is chosen and nothing that contains fits."""
    decision = route(incident(alert(severity=2)), LIBRARY)
    assert decision.chosen is not None and decision.chosen.id == "triage-low"
    assert [c.playbook.id for c in decision.candidates if c.fits] == ["triage-low"]


def test_nothing_fits_a_medium_alert_without_attack_data() -> None:
    """Given a medium alert without tactics or techniques,
    When routed,
    Then no playbook is chosen, and the explanation says so and why each failed."""
    decision = route(incident(alert(severity=3)), LIBRARY)
    assert decision.chosen is None
    lines = decision.explain()
    assert lines[0] == "no playbook's trigger fits this incident"
    assert "  severity medium is not within informational..low" in lines


def test_a_technique_matches_its_sub_techniques() -> None:
    """Given a trigger on T1566 and an alert naming T1566.002,
    When checked,
    Then it fits; a trigger on T1566.001 does not."""
    phish = incident(alert(attacks=(("TA0001", "T1566.002"),)))
    parent = _inline("parent", "  techniques: [T1566]\n")
    sibling = _inline("sibling", "  techniques: [T1566.001]\n")
    decision = route(phish, [sibling, parent])
    assert decision.chosen is parent
    assert [c.fits for c in decision.candidates] == [True, False]


def test_more_criteria_beat_a_higher_severity_floor() -> None:
    """Given two fitting playbooks, one with more criteria, one with a higher floor,
    When routed,
    Then the one with more criteria wins; with equal criteria the higher floor wins."""
    found = incident(alert(severity=5, types=("ldt",)))
    many = _inline("many", "  sources: [crowdstrike]\n  finding_types: [LDT]\n")
    high = _inline("high", "  min_severity: critical\n")
    also_high = _inline("also-high", "  sources: [crowdstrike]\n  min_severity: critical\n")
    assert route(found, [high, many]).chosen is many
    assert route(found, [many, also_high]).chosen is also_high


def test_sources_are_matched_on_product_words() -> None:
    """Given an Entra alert (vendor Microsoft, product Entra ID Protection),
    When its source words are taken,
    Then entra is among them and defender is not."""
    entra = alert(vendor="Microsoft", product="Entra ID Protection")
    words = alert_sources(entra)
    assert "entra" in words and "defender" not in words
