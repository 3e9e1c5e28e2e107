"""Python playbooks: loaded, routed and planned like YAML ones, and unable to act.

Each test writes a playbook module into a temporary playbooks directory (or uses the
library's ``phishing-click.py``) and goes through the loader, the router and the planner
that ``stanch playbook`` and the lifecycle use; lookups are answered by lab simulators.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flows.models import Stage
from flows.playbook import (
    MutationRefused,
    PlaybookError,
    PlaybookRunError,
    PythonPlaybook,
    load_playbook,
    load_playbooks,
    plan_playbook,
    route,
)
from flows.playbook.engine import plan_playbook as plan_yaml_playbook
from stanch.playbook_cli import lab_lookup
from tests.playbooks.helpers import PLAYBOOKS, alert, incident

HEAD = """\
from flows.playbook import PlannedAction, StageContext, define_playbook

book = define_playbook(
    id="{id}",
    version=1,
    title="A test playbook",
    owner="soc-leads",
    trigger={{"min_severity": "low"}},
)
"""


def module(tmp_path: Path, body: str, *, pid: str = "custom") -> Path:
    """Write ``playbooks/<pid>.py``: the metadata above, then ``body`` (at column 0)."""
    path = tmp_path / f"{pid}.py"
    path.write_text(HEAD.format(id=pid) + "\n" + textwrap.dedent(body), encoding="utf-8")
    return path


async def plan_in_lab(path: Path, **alert_fields: object):  # type: ignore[no-untyped-def]
    loaded = load_playbook(path)
    subject = incident(alert(**alert_fields))  # type: ignore[arg-type]
    async with lab_lookup(subject) as lookup:
        return await plan_playbook(loaded, subject, lookup)


def test_the_library_python_playbook_loads_with_yaml_metadata() -> None:
    """Given playbooks/phishing-click.py,
    When the library is loaded,
    Then it is a PythonPlaybook among the YAML ones, with its metadata checked by the same
    schema (severity names became OCSF ids, ATT&CK ids kept) and its three stages."""
    library = {p.id: p for p in load_playbooks(PLAYBOOKS)}
    phishing = library["phishing-click"]
    assert isinstance(phishing, PythonPlaybook)
    assert phishing.file.endswith("phishing-click.py")
    assert phishing.version == 2 and phishing.spec.owner == "soc-leads"
    assert phishing.spec.attack == ("T1566.002", "T1204.001")
    assert int(phishing.spec.trigger.min_severity) == 2  # "low"
    assert set(phishing.code.stages) == {Stage.INVESTIGATE, Stage.CONTAIN, Stage.REMEDIATE}


async def test_the_python_playbook_plans_what_its_yaml_version_planned() -> None:
    """Given phishing-click as Python and the YAML version it replaced (from git history,
    inlined here as the steps it had),
    When both plan the same incident against the same lab,
    Then the plans are identical, hash for hash, and the same steps are left to the analyst."""
    yaml_text = textwrap.dedent(
        """\
        id: phishing-click
        version: 1
        title: Credential phishing link clicked
        owner: soc-leads
        trigger: {min_severity: low}
        steps:
          investigate:
            - id: users
              action: identity.find_user
              for_each: "{{ incident.users }}"
              args: {login: "{{ item }}"}
          contain:
            - id: revoke_sessions
              action: identity.revoke_sessions
              for_each: "{{ steps.users.result }}"
              args: {user_id: "{{ item.id }}"}
              label: "{{ item.login }}"
            - id: block_site_ip
              action: firewall.block_ip
              for_each: "{{ incident.external_ips }}"
              args:
                ip: "{{ item }}"
                ttl_seconds: 86400
                reason: "stanch {{ incident.id }}: phishing site"
          remediate:
            - id: expire_password
              action: identity.expire_password
              for_each: "{{ steps.users.result }}"
              args: {user_id: "{{ item.id }}"}
              label: "{{ item.login }}"
            - id: reset_factors
              action: identity.reset_factors
              for_each: "{{ steps.users.result }}"
              args: {user_id: "{{ item.id }}"}
              label: "{{ item.login }}"
        """
    )
    from flows.playbook import parse_playbook

    as_yaml = parse_playbook(yaml_text)
    as_python = load_playbook(PLAYBOOKS / "phishing-click.py")
    subject = incident(alert(user="apatel@acme.example", ips=("198.51.100.23",)))
    async with lab_lookup(subject) as lookup:
        from_yaml = await plan_yaml_playbook(as_yaml, subject, lookup)
        from_python = await plan_playbook(as_python, subject, lookup)
    assert [p.sha256 for p in from_python.plans()] == [p.sha256 for p in from_yaml.plans()]
    assert [a.step for a in from_python.actions] == [a.step for a in from_yaml.actions]
    assert len(from_python.plans()) == 4


async def test_a_python_playbook_cannot_call_a_mutating_method(tmp_path: Path) -> None:
    """Given a stage function that calls ctx.edr.contain_host instead of returning a plan,
    When it is planned,
    Then planning fails with MutationRefused naming the action and the way to do it, and
    nothing was planned."""
    path = module(
        tmp_path,
        """
        @book.investigate
        async def investigate(ctx: StageContext) -> None:
            host = await ctx.edr.find_host(hostname="WS-0001")
            await ctx.edr.contain_host(host.id, reason="by hand")
        """,
    )
    with pytest.raises(MutationRefused) as caught:
        await plan_in_lab(path)
    assert "edr.contain_host changes the vendor's state" in str(caught.value)
    assert "ctx.plan('edr.contain_host'" in str(caught.value)


@pytest.mark.parametrize(
    "reach",
    [
        "ctx.edr.adapter",
        "ctx.edr._adapter",
        "ctx.edr.__dict__",
        "ctx.identity.suspend_user",
        "ctx.firewall.block_ip",
        "ctx.edr.client",
    ],
)
async def test_the_read_only_views_hold_no_adapter_to_reach(tmp_path: Path, reach: str) -> None:
    """Given a stage function reaching for the adapter behind a read-only view,
    When it is planned,
    Then the attribute does not exist or is refused: a view has no adapter, client or
    mutating method to hand out."""
    path = module(
        tmp_path,
        f"""
        @book.investigate
        async def investigate(ctx: StageContext) -> None:
            {reach}
        """,
    )
    with pytest.raises(PlaybookRunError) as caught:
        await plan_in_lab(path)
    refused = isinstance(caught.value, MutationRefused)
    assert refused or isinstance(caught.value.__cause__, AttributeError)


async def test_a_wrong_return_type_is_reported_with_file_and_line(tmp_path: Path) -> None:
    """Given a contain function that returns a dict of plans,
    When it is planned,
    Then the error names the file, the function's line and what to return instead."""
    path = module(
        tmp_path,
        """
        @book.contain
        async def contain(ctx: StageContext) -> dict[str, object]:
            return {"isolate": ctx.plan("edr.contain_host", host_id="aid-1", reason="x")}
        """,
    )
    with pytest.raises(PlaybookRunError) as caught:
        await plan_in_lab(path)
    line = path.read_text().splitlines().index("@book.contain") + 1
    assert f"{path}:{line}: returned dict" in str(caught.value)


async def test_an_exception_in_a_stage_names_the_line_that_raised(tmp_path: Path) -> None:
    """Given a remediate function that raises on its second line,
    When it is planned,
    Then the error carries the file and that line, and the exception's own words."""
    path = module(
        tmp_path,
        """
        @book.remediate
        async def remediate(ctx: StageContext) -> list[PlannedAction]:
            users = ctx.state["users"]
            return users
        """,
    )
    with pytest.raises(PlaybookRunError) as caught:
        await plan_in_lab(path)
    line = path.read_text().splitlines().index('    users = ctx.state["users"]') + 1
    assert f"{path}:{line}: KeyError: 'users'" in str(caught.value)


@pytest.mark.parametrize(
    ("call", "why"),
    [
        ('ctx.plan("edr.find_host", hostname="x")', "is a lookup"),
        ('ctx.plan("edr.release_host", host_id="a", reason="r")', "belongs in remediate"),
        ('ctx.plan("edr.contain_host", host_id="a")', "needs reason"),
        ('ctx.plan("edr.contain_host", host_id="a", reason="r", force=True)', "no argument force"),
        ('ctx.plan("edr.contain_host", host_id=7, reason="r")', "host_id=7"),
        ('ctx.plan("edr.wipe_host", host_id="a")', "not an action stanch knows"),
        ('ctx.plan("edr.contain_host", host_id="a", reason="r", step="Bad Step")', "step id"),
    ],
)
async def test_plans_are_checked_like_yaml_steps(tmp_path: Path, call: str, why: str) -> None:
    """Given a contain function making a plan YAML would refuse,
    When it is planned,
    Then it fails with the same kind of reason (lookup, stage, arguments, types, id)."""
    path = module(
        tmp_path,
        f"""
        @book.contain
        async def contain(ctx: StageContext) -> list[PlannedAction]:
            return [{call}]
        """,
    )
    with pytest.raises(PlaybookRunError) as caught:
        await plan_in_lab(path)
    assert why in str(caught.value)


async def test_approval_can_be_required_and_duplicates_are_planned_once(tmp_path: Path) -> None:
    """Given a contain function that plans the same host twice, once requiring approval,
    When it is planned,
    Then one plan results, carrying approval=required, and the repeat is noted as skipped."""
    path = module(
        tmp_path,
        """
        @book.contain
        async def contain(ctx: StageContext) -> list[PlannedAction]:
            first = ctx.plan("edr.contain_host", host_id="aid-1", reason="r", step="isolate",
                             approval="required")
            again = ctx.plan("edr.contain_host", host_id="aid-1", reason="r", step="again")
            return [first, again]
        """,
    )
    result = await plan_in_lab(path)
    assert [(a.step, a.approval) for a in result.actions] == [("isolate", "required")]
    assert [(n.step, n.status) for n in result.notes] == [("again", "skipped")]


def test_routing_weighs_a_python_playbook_like_a_yaml_one(tmp_path: Path) -> None:
    """Given a Python playbook whose trigger names CrowdStrike at high severity, beside the
    library,
    When an incident of a high CrowdStrike alert is routed among all of them,
    Then the more specific Python trigger wins and the explanation names its file."""
    path = module(tmp_path, "@book.contain\nasync def contain(ctx):\n    return []\n")
    text = path.read_text().replace(
        'trigger={"min_severity": "low"}',
        'trigger={"sources": ["crowdstrike"], "min_severity": "high", "finding_types": '
        '["Ransomware"], "techniques": ["T1486"]}',
    )
    path.write_text(text)
    playbooks = [*load_playbooks(PLAYBOOKS), load_playbook(path)]
    subject = incident(alert(severity=5, types=("Ransomware",), attacks=(("TA0040", "T1486"),)))
    decision = route(subject, playbooks)
    assert decision.chosen is not None and decision.chosen.id == "custom"
    assert decision.explain()[0] == f"routed to custom ({path})"


def test_two_files_with_one_id_are_refused(tmp_path: Path) -> None:
    """Given custom.py beside a copy of it as YAML with the same id,
    When the directory is loaded,
    Then loading fails naming both files."""
    module(tmp_path, "@book.contain\nasync def contain(ctx):\n    return []\n")
    (tmp_path / "custom.yaml").write_text(
        "id: custom\nversion: 1\ntitle: t\nowner: o\ntrigger: {}\nsteps:\n  report:\n"
        "    - id: tell\n      manual: look\n"
    )
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    [issue] = caught.value.issues
    assert (issue.code, Path(issue.file).name) == ("id-mismatch", "custom.yaml")
    assert f"{tmp_path / 'custom.py'} has the same id 'custom'" in issue.message
