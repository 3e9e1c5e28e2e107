"""`stanch serve` checks the policies and playbooks it will run before it starts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.stanch.test_cli import REPO, fresh_user_env, stanch

TOKEN = "t" * 40


def test_serve_refuses_to_start_on_an_invalid_policy_naming_file_and_line(
    tmp_path: Path,
) -> None:
    """Given a policies directory whose acme.yaml has an unknown field on line 4
    When `stanch serve` starts
    Then it exits 2 before listening or starting Prefect, and its log names the file and
    line of the problem."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text((REPO / "policies" / "default.yaml").read_text())
    (policies / "acme.yaml").write_text(
        "version: 1\ntenant: acme\napprovers: {cli: true}\nunattended: everything\n"
    )
    home = tmp_path / ".stanch"
    env = fresh_user_env(home)
    env.update(
        {
            "STANCH_POLICIES_DIR": str(policies),
            "STANCH_SOURCES": json.dumps({"siem": {"tenant": "acme", "bearer_token": TOKEN}}),
        }
    )

    result = stanch("serve", "--port", "0", cwd=tmp_path, env=env, timeout=60)

    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{policies / 'acme.yaml'}:4: unknown-field" in result.stderr
    assert "not starting" in result.stderr
    assert not (home / "prefect").exists(), "no Prefect server for a service that never starts"


def test_serve_logs_a_broken_playbook_and_skips_it(tmp_path: Path) -> None:
    """Given a valid policy and a playbook directory holding one broken playbook
    When serve checks its content
    Then the broken playbook is logged with its file and line as skipped, and the check
    passes (an incident routes among the valid ones)."""
    from flows.settings import StanchSettings
    from stanch.serve_cli import content_is_sound

    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "ransomware.yaml").write_text((REPO / "playbooks" / "ransomware.yaml").read_text())
    (playbooks / "broken.yaml").write_text("id: broken\nversion: 1\nsteps: 3\n")
    settings = StanchSettings(
        home=tmp_path / ".stanch", playbooks_dir=playbooks, policies_dir=REPO / "policies"
    )
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("stanch.serve")
    logger.addHandler(handler)
    try:
        assert content_is_sound(settings) is True
    finally:
        logger.removeHandler(handler)
    skipped = [r.getMessage() for r in records if "invalid playbook" in r.getMessage()]
    assert skipped and all(f"{playbooks / 'broken.yaml'}:" in m for m in skipped)
