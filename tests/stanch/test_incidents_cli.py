"""``stanch incidents`` as an analyst runs it: a subprocess on a real store, exit codes,
one-line errors, nothing changed by a refusal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from flows.record import Ledger, open_store
from tests.flows.factories import incident
from tests.stanch.test_cli import fresh_user_env, stanch


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A stanch home whose store holds demo incidents 1 and 2 and acme incident 3."""
    home = tmp_path / ".stanch"

    async def seed() -> None:
        async with open_store(f"sqlite+aiosqlite:///{home / 'stanch.db'}") as store:
            for n, tenant in ((1, "demo"), (2, "demo"), (3, "acme")):
                await store.save_incident(incident(n, tenant=tenant))

    asyncio.run(seed())
    return home


def run(home: Path, *args: str) -> tuple[int, str, str]:
    result = stanch("incidents", *args, cwd=home.parent, env=fresh_user_env(home))
    return result.returncode, result.stdout, result.stderr


def ledger_entries(home: Path) -> int:
    async def count() -> int:
        async with open_store(f"sqlite+aiosqlite:///{home / 'stanch.db'}") as store:
            return (await Ledger(store).head()).seq

    return asyncio.run(count())


def test_an_analyst_works_a_case_from_the_terminal(home: Path) -> None:
    """Given three stored incidents,
    When an analyst lists them, takes one, notes it, closes it and reopens it,
    Then each step exits 0, `show --json` carries the history with the analyst named as
    cli:<user>@<host>, and `list --status/--assignee/--tenant` filter."""
    inc = incident(1).id
    code, listed, _ = run(home, "list", "--json")
    assert code == 0 and {r["incident_id"] for r in json.loads(listed)} == {
        incident(n).id for n in (1, 2, 3)
    }
    assert run(home, "assign", inc, "alice")[0] == 0
    assert run(home, "note", inc, "beaconing to 203.0.113.66 confirmed")[0] == 0
    assert run(home, "close", inc, "--disposition", "false-positive", "--summary", "lab")[0] == 0
    assert run(home, "reopen", inc, "--reason", "the lab host is not a lab host")[0] == 0

    code, shown, _ = run(home, "show", inc, "--json")
    assert code == 0
    case = json.loads(shown)["case"]
    assert case["status"] == "reopened" and case["assignee"] == "alice"
    assert [n["text"] for n in case["notes"]] == ["beaconing to 203.0.113.66 confirmed"]
    assert [t["to_status"] for t in case["transitions"]] == ["closed", "reopened"]
    assert all(t["actor"].startswith("cli:") and "@" in t["actor"] for t in case["transitions"])

    assert [
        r["incident_id"] for r in json.loads(run(home, "list", "--json", "--assignee", "alice")[1])
    ] == [inc]
    assert [
        r["incident_id"] for r in json.loads(run(home, "list", "--json", "--tenant", "acme")[1])
    ] == [incident(3).id]
    code, table, _ = run(home, "list", "--status", "reopened")
    assert code == 0 and inc in table and incident(2).id not in table


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("show", "INC-20990101-0001"), 2, "error: no incident INC-20990101-0001"),
        (("note", "INC-20990101-0001", "x"), 2, "error: no incident INC-20990101-0001"),
        (("close", "{1}", "--summary", "s"), 2, "error: disposition: is required"),
        (("close", "{1}", "--disposition", "bogus", "--summary", "s"), 2, "'bogus' is not one of"),
        (("close", "{1}", "--disposition", "duplicate", "--summary", "s"), 2, "duplicate_of"),
        (("close", "{1}", "--disposition", "true-positive"), 2, "error: summary: is required"),
        (("reopen", "{1}", "--reason", "r"), 1, "refused: "),
        (("reopen", "{1}"), 2, "error: reason: is required"),
        (("note", "{1}", "n" * 20_000), 2, "error: text: is 20000 characters long"),
        (("merge", "{1}", "--into", "{1}"), 2, "cannot be merged into itself"),
        (("merge", "{1}", "--into", "{3}"), 2, "error: into: no incident"),
        (("merge", "{1}"), 2, "error: --into"),
        (("list", "--status", "resolved"), 2, "error: --status"),
        (("assign", "{1}", "two words"), 2, "error: assignee"),
    ],
)
def test_bad_input_gets_one_line_an_exit_code_and_changes_nothing(
    home: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    """Given stored incidents, When a command names an unknown incident, a missing or
    unknown disposition, a note far over the limit, a merge into itself or into another
    tenant's incident, or reopens an open case,
    Then it exits 2 (usage, unknown id) or 1 (refused by the case's state) with one line
    on stderr saying why, and the ledger holds no new entry."""
    ids = {f"{{{n}}}": incident(n).id for n in (1, 3)}
    exit_code, _, stderr = run(home, *(ids.get(a, a) for a in args))
    assert exit_code == code
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert ledger_entries(home) == 0


def test_closing_twice_is_refused_with_exit_1(home: Path) -> None:
    """Given a closed case, When closed again, Then exit 1 and the first closure stands."""
    inc = incident(1).id
    assert run(home, "close", inc, "--disposition", "true-positive", "--summary", "first")[0] == 0
    code, _, stderr = run(home, "close", inc, "--disposition", "false-positive", "--summary", "2nd")
    assert code == 1 and "already closed" in stderr
    case = json.loads(run(home, "show", inc, "--json")[1])["case"]
    assert (case["disposition"], case["summary"]) == ("true-positive", "first")
    assert ledger_entries(home) == 1
