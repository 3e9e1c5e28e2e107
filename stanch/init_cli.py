"""``stanch init DIR``: a starting point for a new SOC: playbooks, policies, settings, state.

The playbooks and policies are copies of the ones shipped with stanch, to edit; ``.env``
lists the settings with safe defaults and no secret; ``.stanch/`` marks the directory so
that every ``stanch`` command run inside it keeps its state there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console

from stanch.cli_support import FAILED, OK

out = Console(soft_wrap=True, highlight=False, markup=False)
err = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)

ENV_TEMPLATE = """\
# stanch settings for this SOC. Nothing here is read automatically: load it into the
# environment of the stanch processes (`set -a; . ./.env; set +a` in a shell, or
# EnvironmentFile= in a systemd unit). Keep secrets out of version control.

# Where state lives: the .stanch directory next to this file is found from any
# subdirectory, so this stays commented unless the state must live elsewhere.
# STANCH_HOME=/var/lib/stanch

# lab: simulated vendors (try things safely); live: the real vendor APIs.
STANCH_MODE=lab
STANCH_TENANT=demo
STANCH_POLICIES_DIR=./policies
STANCH_PLAYBOOKS_DIR=./playbooks

# Which vendor answers each capability.
STANCH_EDR=crowdstrike
STANCH_IDENTITY=okta
STANCH_FIREWALL=fortigate

# Live mode reads each vendor's STANCH_<VENDOR>_<FIELD>, for example:
# STANCH_CROWDSTRIKE_CLIENT_ID=
# STANCH_CROWDSTRIKE_CLIENT_SECRET=

# Approvals: cli (stanch approve) or slack.
STANCH_APPROVAL_CHANNEL=cli
STANCH_APPROVAL_TIMEOUT_SECONDS=3600
# STANCH_SLACK_BOT_TOKEN=
# STANCH_SLACK_APP_TOKEN=
# STANCH_SLACK_CHANNEL=
# STANCH_SLACK_TEAM_ID=
"""


def init(directory: Path, /) -> int:
    """Write a starter playbooks/, policies/ and .env for a new SOC into DIRECTORY.

    Nothing that exists is overwritten: an existing playbooks/, policies/ or .env stops
    the command before anything is written.

    Exit status: 0 written; 1 something was in the way, or this install ships no
    playbooks or policies.

    Args:
        directory: where to write (created if missing).
    """
    from flows.settings import HOME_MARKER, bundled_directory

    targets = [directory / "playbooks", directory / "policies", directory / ".env"]
    in_the_way = [str(t) for t in targets if t.exists()]
    if in_the_way:
        err.print(f"stanch init: {', '.join(in_the_way)} already exist(s); nothing was written")
        return FAILED
    try:
        playbooks = bundled_directory("playbooks", "*.yaml")
        policies = bundled_directory("policies", "default.yaml")
    except FileNotFoundError as exc:
        err.print(f"stanch init: {exc}")
        return FAILED
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(playbooks, directory / "playbooks")
    shutil.copytree(policies, directory / "policies")
    (directory / ".env").write_text(ENV_TEMPLATE, encoding="utf-8")
    (directory / HOME_MARKER).mkdir(exist_ok=True)
    out.print(f"Wrote {directory}/playbooks, {directory}/policies and {directory}/.env.")
    out.print(f"State is kept in {directory / HOME_MARKER}.")
    out.print(f"Next: cd {directory} && stanch playbook validate && stanch policy check --validate")
    return OK
