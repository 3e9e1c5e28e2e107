"""``edr.hunt`` in playbooks: typed arguments, the ``hunt`` variable, Python read-only lookups.

Lookups are answered by lab simulators that start with the lab fleet, whose sensors saw
the demo's C2 address on WS-0042 and WS-0107.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from flows.models import Incident, Stage
from flows.playbook import (
    Lookup,
    PlaybookError,
    PlaybookRunError,
    adapter_lookup,
    load_playbook,
    plan_playbook,
)
from flows.settings import StanchSettings
from flows.wiring import Lab, connect
from integrations.simkit import LAB_C2_IP
from tests.playbooks.helpers import alert, incident, playbook

HEAD = """\
from flows.playbook import PlannedAction, StageContext, define_playbook

book = define_playbook(
    id="hunter", version=1, title="Hunts", owner="soc-leads", trigger={"min_severity": "low"}
)
"""


@asynccontextmanager
async def fleet_lookup(subject: Incident) -> AsyncIterator[Lookup]:
    settings = StanchSettings(mode="lab")
    async with connect(settings, Lab(), tenant=subject.tenant) as found:
        yield adapter_lookup({c: found.adapter(c) for c in found.vendors})


def c2_incident() -> Incident:
    return incident(alert(hostname="WS-0042", ips=(LAB_C2_IP,)))


async def test_a_yaml_hunt_feeds_containment_of_each_host_found_once() -> None:
    """Given a playbook that hunts the incident's address twice (two steps) and contains
    every host in hunt.hosts
    When it is planned against the lab fleet
    Then each host that saw the address is planned once, labelled by name."""
    book = playbook(
        """
        steps:
          investigate:
            - id: hunt_week
              action: edr.hunt
              for_each: "{{ incident.external_ips }}"
              args: {kind: ipv4, value: "{{ item }}", since_days: 7}
            - id: hunt_day
              action: edr.hunt
              for_each: "{{ incident.external_ips }}"
              args: {kind: ipv4, value: "{{ item }}", since_days: 1}
          contain:
            - id: isolate_hunted
              action: edr.contain_host
              approval: required
              for_each: "{{ hunt.hosts }}"
              args: {host_id: "{{ item.id }}", reason: "seen {{ item.indicators | join(',') }}"}
              label: "{{ item.hostname }}"
        """
    )
    subject = c2_incident()
    async with fleet_lookup(subject) as lookup:
        plan = await plan_playbook(book, subject, lookup)
    planned = plan.planned(Stage.CONTAIN)
    assert sorted(a.plan.target_label for a in planned) == ["WS-0042", "WS-0107"]
    assert {a.approval for a in planned} == {"required"}
    assert {a.plan.parameters["reason"] for a in planned} == {f"seen ipv4:{LAB_C2_IP}"}
    [week, day] = [n.text for n in plan.notes if n.status == "looked_up"]
    assert week == day == f"hunted ipv4 {LAB_C2_IP} on 2 host(s)"


async def test_a_hunt_of_a_malformed_value_fails_naming_the_argument() -> None:
    """Given a hunt step whose value is not an IPv4 address
    When it is planned
    Then planning fails naming args.value and the expected form."""
    book = playbook(
        """
        steps:
          investigate:
            - id: hunt_bad
              action: edr.hunt
              args: {kind: ipv4, value: "{{ incident.hostnames[0] }}"}
        """
    )
    subject = c2_incident()
    async with fleet_lookup(subject) as lookup:
        with pytest.raises(PlaybookRunError) as caught:
            await plan_playbook(book, subject, lookup)
    assert "args.value: ipv4 must be a dotted-quad IPv4 address" in str(caught.value)


async def test_a_python_playbook_hunts_through_its_read_only_edr(tmp_path: Path) -> None:
    """Given a Python playbook whose investigate stage calls ctx.edr.hunt
    When it is planned against the lab fleet
    Then it gets the hosts that saw the address and plans their containment."""
    path = tmp_path / "hunter.py"
    body = """
    @book.investigate
    async def investigate(ctx: StageContext) -> None:
        found = await ctx.edr.hunt(kind="ipv4", value=ctx.incident.external_ips[0], since_days=7)
        ctx.state["hosts"] = [(h.host_id, h.hostname) for h in found.hosts]

    @book.contain
    async def contain(ctx: StageContext) -> list[PlannedAction]:
        return [
            ctx.plan("edr.contain_host", host_id=i, reason="hunted", label=n, approval="required")
            for i, n in ctx.state["hosts"]
        ]
    """
    path.write_text(HEAD + textwrap.dedent(body), encoding="utf-8")
    subject = c2_incident()
    async with fleet_lookup(subject) as lookup:
        plan = await plan_playbook(load_playbook(path), subject, lookup)
    assert sorted(a.plan.target_label for a in plan.actions) == ["WS-0042", "WS-0107"]


def test_since_days_must_be_a_whole_number() -> None:
    """Given a hunt step whose since_days is text
    When the playbook is loaded
    Then it is refused as a bad argument type."""
    with pytest.raises(PlaybookError) as caught:
        playbook(
            """
            steps:
              investigate:
                - id: hunt_bad
                  action: edr.hunt
                  args: {kind: sha256, value: "{{ incident.sha256s[0] }}", since_days: "a week"}
            """
        )
    [issue] = caught.value.issues
    assert issue.code == "bad-argument-type" and "since_days" in issue.message
