"""The planner: plans in order per stage, honouring for_each, when, depends_on and confirm."""

from __future__ import annotations

from typing import Any

import pytest

from flows.models import Stage, Verdict
from flows.playbook import PlaybookRunError, adapter_lookup, decide, plan_playbook
from flows.policy import RulesFile, RulesOfEngagement
from integrations.capabilities import Capability
from tests.playbooks.helpers import FakeLookup, alert, host, incident, playbook, user

LOOKUP_AND_CONTAIN = """\
steps:
  investigate:
    - id: hosts
      action: edr.find_host
      for_each: "{{ incident.hostnames }}"
      args: {hostname: "{{ item }}"}
  contain:
    - id: isolate
      action: edr.contain_host
      for_each: "{{ steps.hosts.result }}"
      when: "{{ item.platform == 'Windows' }}"
      args: {host_id: "{{ item.id }}", reason: "stanch {{ incident.id }}"}
      label: "{{ item.hostname }}"
"""


async def test_lookup_results_feed_later_steps_and_missing_is_recorded() -> None:
    """Given two hosts named, of which the EDR knows one,
    When the playbook is planned,
    Then one contain_host plan for the known host, labelled by name, and the other missing."""
    two = incident(alert(hostname="WS-1"), alert(uid="a2", hostname="WS-2"))
    lookup = FakeLookup({("edr.find_host", "WS-1"): host("WS-1")})
    result = await plan_playbook(playbook(LOOKUP_AND_CONTAIN), two, lookup)
    [plan] = result.plans(Stage.CONTAIN)
    assert (plan.action, plan.target, plan.target_label) == ("edr.contain_host", "id-WS-1", "WS-1")
    assert plan.parameters == {"reason": "stanch INC-20250314-0001"}
    assert result.results["hosts"]["missing"] == ["WS-2"]
    assert [c[0] for c in lookup.calls] == ["edr.find_host", "edr.find_host"]


async def test_when_is_checked_per_item() -> None:
    """Given a Windows and a Linux host and a when on the platform,
    When planned,
    Then only the Windows host is contained."""
    linux = host("SRV-1") | {"platform": "Linux"}
    two = incident(alert(hostname="WS-1"), alert(uid="a2", hostname="SRV-1"))
    lookup = FakeLookup(
        {("edr.find_host", "WS-1"): host("WS-1"), ("edr.find_host", "SRV-1"): linux}
    )
    result = await plan_playbook(playbook(LOOKUP_AND_CONTAIN), two, lookup)
    assert [p.target_label for p in result.plans()] == ["WS-1"]


async def test_a_false_when_skips_the_step_and_its_dependants() -> None:
    """Given a step whose when is false and a step depending on it,
    When planned,
    Then both are skipped with a note, and nothing is planned."""
    pb = playbook(
        """\
        steps:
          contain:
            - id: suspend
              action: identity.suspend_user
              when: "{{ incident.severity_id >= 5 }}"
              for_each: "{{ incident.users }}"
              args: {user_id: "{{ item }}", reason: r}
            - id: revoke
              action: identity.revoke_sessions
              depends_on: [suspend]
              for_each: "{{ incident.users }}"
              args: {user_id: "{{ item }}"}
        """
    )
    result = await plan_playbook(pb, incident(alert(severity=4)), FakeLookup())
    assert result.plans() == []
    assert [(n.step, n.status) for n in result.notes] == [
        ("suspend", "skipped"),
        ("revoke", "skipped"),
    ]
    assert "suspend did not run" in result.notes[1].text


async def test_same_stage_dependencies_reorder_steps() -> None:
    """Given a step listed before the step it depends on,
    When planned,
    Then the dependency is planned first."""
    pb = playbook(
        """\
        steps:
          contain:
            - id: revoke
              action: identity.revoke_sessions
              depends_on: [suspend]
              args: {user_id: u1}
            - id: suspend
              action: identity.suspend_user
              args: {user_id: u1, reason: r}
        """
    )
    result = await plan_playbook(pb, incident(), FakeLookup())
    assert [p.verb for p in result.plans()] == ["suspend_user", "revoke_sessions"]


async def test_an_empty_loop_is_not_a_skip() -> None:
    """Given no users named and a report step reading the user lookup,
    When planned,
    Then the lookup ran with no result and the report step still runs."""
    pb = playbook(
        """\
        steps:
          investigate:
            - id: users
              action: identity.find_user
              for_each: "{{ incident.users }}"
              args: {login: "{{ item }}"}
          report:
            - id: tell
              notify: "#soc"
              message: "{{ steps.users.result | length }} users"
        """
    )
    result = await plan_playbook(pb, incident(alert(user=None)), FakeLookup())
    assert result.results["users"] == {"result": [], "missing": [], "skipped": False}
    [tell] = [n for n in result.notes if n.step == "tell"]
    assert tell.status == "not_executed"
    assert tell.text.startswith("#soc: 0 users (not executed:")


async def test_confirm_steps_wait_until_confirmed() -> None:
    """Given a release step with confirm,
    When planned without and then with its id confirmed,
    Then first a waiting note and no plan, then the release plan in remediate."""
    pb = playbook(
        """\
        steps:
          remediate:
            - id: release
              action: edr.release_host
              confirm: "Is {{ incident.hostnames[0] }} clean?"
              args: {host_id: h1, reason: clean}
              label: WS-0001
        """
    )
    waiting = await plan_playbook(pb, incident(), FakeLookup())
    assert waiting.plans() == []
    assert waiting.notes[0].status == "waiting"
    assert waiting.notes[0].text.endswith("Is WS-0001 clean?")
    confirmed = await plan_playbook(pb, incident(), FakeLookup(), confirmed={"release"})
    [plan] = confirmed.plans(Stage.REMEDIATE)
    assert (plan.verb, plan.target, plan.stage) == ("release_host", "h1", Stage.REMEDIATE)


async def test_the_same_action_on_the_same_target_is_planned_once() -> None:
    """Given two steps blocking the same address,
    When planned,
    Then one plan (the executor would refuse the second anyway) and a note naming the first."""
    pb = playbook(
        """\
        steps:
          contain:
            - id: first
              action: firewall.block_ip
              args: {ip: 203.0.113.9, ttl_seconds: 3600, reason: r}
            - id: again
              action: firewall.block_ip
              args: {ip: 203.0.113.9, ttl_seconds: null, reason: r}
        """
    )
    result = await plan_playbook(pb, incident(), FakeLookup())
    assert [a.step for a in result.actions] == ["first"]
    assert result.actions[0].plan.parameters == {"ttl_seconds": 3600, "reason": "r"}
    assert "already planned by first" in result.notes[0].text


async def test_a_number_argument_can_come_from_an_expression() -> None:
    """Given ttl_seconds written as an expression,
    When planned,
    Then the plan's parameter is an int."""
    pb = playbook(
        """\
        steps:
          contain:
            - id: block
              action: firewall.block_ip
              args: {ip: 203.0.113.9, ttl_seconds: "{{ 2 * 3600 }}", reason: r}
        """
    )
    result = await plan_playbook(pb, incident(), FakeLookup())
    assert result.plans()[0].parameters["ttl_seconds"] == 7200


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ('{ip: 203.0.113.9, ttl_seconds: "{{ incident.id }}", reason: r}', "takes int or none"),
        ('{ip: "{{ incident.severity_id }}", ttl_seconds: 1, reason: r}', "takes str"),
        ('{ip: "{{ incident.title[:0] }}", ttl_seconds: 1, reason: r}', "not a target"),
        ('{ip: "{{ incident.hostnames[5] }}", ttl_seconds: 1, reason: r}', "args.ip"),
    ],
)
async def test_bad_values_at_run_time_name_the_step(args: str, match: str) -> None:
    """Given arguments that render to the wrong type, or fail to render,
    When planned,
    Then PlaybookRunError naming the playbook and the step."""
    step = "    - id: block\n      action: firewall.block_ip\n"
    pb = playbook(f"steps:\n  contain:\n{step}      args: {args}\n")
    with pytest.raises(PlaybookRunError, match=match) as caught:
        await plan_playbook(pb, incident(), FakeLookup())
    assert (caught.value.playbook, caught.value.step) == ("inline", "block")


async def test_for_each_must_give_a_list() -> None:
    """Given a for_each that gives a string,
    When planned,
    Then PlaybookRunError (a string would loop over its characters)."""
    pb = playbook(
        'steps:\n  report:\n    - id: s\n      manual: x\n      for_each: "{{ tenant }}"\n'
    )
    with pytest.raises(PlaybookRunError, match="not a list"):
        await plan_playbook(pb, incident(), FakeLookup())


async def test_adapter_lookup_refuses_anything_but_a_lookup() -> None:
    """Given adapters and the adapter lookup,
    When it is asked for a mutating verb,
    Then PlaybookRunError and the adapter is never called."""
    called: list[str] = []

    class Edr:
        async def contain_host(self, host_id: str, *, reason: str) -> None:
            called.append(host_id)

        async def find_host(self, hostname: str) -> dict[str, Any]:
            return host(hostname)

    lookup = adapter_lookup({Capability.EDR: Edr()})
    assert (await lookup("edr.find_host", {"hostname": "WS-1"}))["id"] == "id-WS-1"
    with pytest.raises(PlaybookRunError, match="not a read-only lookup"):
        await lookup("edr.contain_host", {"host_id": "h1", "reason": "r"})
    assert called == []


def _policy(**actions: Any) -> RulesOfEngagement:
    rules = RulesFile.model_validate(
        {
            "version": 1,
            "approvers": {"cli": True, "cli_users": ["*"]},
            "approval": {"approvals": 2},
            "actions": actions,
        }
    )
    return RulesOfEngagement(rules, source="inline.yaml")


async def test_required_approval_tightens_policy_and_never_loosens_it() -> None:
    """Given a policy: expire_password unattended, revoke_sessions approval, block_ip forbidden,
    When steps with approval: required are decided,
    Then the unattended one needs approval (policy's count), the others keep policy's verdict."""
    pb = playbook(
        """\
        steps:
          contain:
            - id: revoke
              action: identity.revoke_sessions
              approval: required
              args: {user_id: u1}
            - id: block
              action: firewall.block_ip
              approval: required
              args: {ip: 203.0.113.9, ttl_seconds: 60, reason: r}
            - id: expire
              action: identity.expire_password
              approval: required
              args: {user_id: u1}
            - id: expire_policy
              action: identity.expire_password
              args: {user_id: u2}
        """
    )
    policy = _policy(
        **{
            "identity.expire_password": {"unattended_from": "informational"},
            "identity.revoke_sessions": {"approvals": 1},
            "firewall.block_ip": {"forbidden": True},
        }
    )
    result = await plan_playbook(pb, incident(), FakeLookup())
    decisions = decide(policy, result.actions, incident())
    assert [d.verdict for d in decisions] == [
        Verdict.APPROVAL,
        Verdict.FORBIDDEN,
        Verdict.APPROVAL,
        Verdict.UNATTENDED,
    ]
    assert [d.approvals_required for d in decisions] == [1, 0, 2, 0]
    assert "playbook step expire requires approval" in decisions[2].explanation
    assert decisions[2].on_timeout == "deny"


async def test_hunt_and_manual_steps_are_reported_never_executed() -> None:
    """Given a hunt over the hashes and a manual step,
    When planned,
    Then no plan and no lookup, and a rendered 'not executed' note per item."""
    pb = playbook(
        """\
        steps:
          investigate:
            - id: hunt
              hunt: "hosts that ran {{ item }}"
              for_each: "{{ incident.users }}"
          remediate:
            - id: by_hand
              manual: "check {{ tenant }}"
        """
    )
    lookup = FakeLookup()
    result = await plan_playbook(pb, incident(), lookup)
    assert result.plans() == [] and lookup.calls == []
    assert [(n.step, n.status) for n in result.notes] == [
        ("hunt", "not_executed"),
        ("by_hand", "not_executed"),
    ]
    assert result.notes[0].text.startswith("hosts that ran jdoe@acme.example (not executed: ")


async def test_identity_lookups_feed_identity_actions() -> None:
    """Given a user lookup and a suspend step over its results,
    When planned,
    Then the plan targets the IdP's user id and is labelled with the login."""
    pb = playbook(
        """\
        steps:
          investigate:
            - id: users
              action: identity.find_user
              for_each: "{{ incident.users }}"
              args: {login: "{{ item }}"}
          contain:
            - id: suspend
              action: identity.suspend_user
              for_each: "{{ steps.users.result }}"
              args: {user_id: "{{ item.id }}", reason: r}
              label: "{{ item.login }}"
        """
    )
    lookup = FakeLookup({("identity.find_user", "jdoe@acme.example"): user("jdoe@acme.example")})
    [plan] = (await plan_playbook(pb, incident(), lookup)).plans()
    assert (plan.target, plan.target_label) == ("uid-jdoe@acme.example", "jdoe@acme.example")
