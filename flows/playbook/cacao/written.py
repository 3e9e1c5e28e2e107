"""A playbook as its author wrote it: plain YAML data, and YAML text from that data.

Export puts these fields into the stanch extension and import writes them back, so both
read one definition of "as written": the fields given, severities by name, nothing more.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

import yaml

from flows.playbook.schema import STAGE_ORDER, Playbook, Step, Trigger

PLAYBOOK_ORDER = (
    "id",
    "version",
    "title",
    "owner",
    "created",
    "modified",
    "description",
    "attack",
    "trigger",
    "steps",
    "cacao",
)
STEP_ORDER = (
    "id",
    "description",
    "action",
    "hunt",
    "notify",
    "manual",
    "message",
    "confirm",
    "approval",
    "depends_on",
    "for_each",
    "when",
    "args",
    "label",
    "cacao",
)


def trigger_data(trigger: Trigger) -> dict[str, Any]:
    """The trigger's criteria as written, severities by name (``high``)."""
    data: dict[str, Any] = {}
    for name in trigger.model_fields_set:
        value = getattr(trigger, name)
        data[name] = value.name.lower() if name.endswith("_severity") else list(value)
    return {k: data[k] for k in Trigger.model_fields if k in data}


def step_data(step: Step) -> dict[str, Any]:
    """The step's fields as written, in a readable order."""
    dumped = step.model_dump(mode="json", include=step.model_fields_set)
    return {k: dumped[k] for k in STEP_ORDER if k in dumped}


def playbook_data(playbook: Playbook) -> dict[str, Any]:
    """The whole playbook as YAML data: what ``parse_playbook`` reads back unchanged."""
    data: dict[str, Any] = {}
    for name in PLAYBOOK_ORDER:
        if name == "trigger":
            data["trigger"] = trigger_data(playbook.trigger)
        elif name == "steps":
            data["steps"] = {
                stage.value: [step_data(s) for s in steps]
                for stage, steps in playbook.steps.by_stage()
                if steps
            }
        elif name in playbook.model_fields_set:
            value = getattr(playbook, name)
            data[name] = list(value) if isinstance(value, tuple) else value
    return data


def _one_line(text: str) -> str:
    # Header comments come from foreign documents: a newline would end the comment and
    # start YAML of the sender's choosing.
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", text).strip()


class _Dumper(yaml.SafeDumper):
    """Block style; dates as YAML timestamps; multi-line text as literal blocks."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _timestamp(dumper: yaml.SafeDumper, value: date) -> yaml.ScalarNode:
    text = value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else str(value)
    return dumper.represent_scalar("tag:yaml.org,2002:timestamp", text)


_Dumper.add_representer(str, _text)
_Dumper.add_representer(date, _timestamp)
_Dumper.add_representer(datetime, _timestamp)


def dump_yaml(data: dict[str, Any], header: list[str]) -> str:
    """YAML text for playbook data, with ``header`` as one-line comments on top."""
    comments = "".join(f"# {_one_line(line)}\n" if line else "#\n" for line in header)
    parts = []
    for key, value in data.items():
        block = yaml.dump(
            {key: value}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=4096
        )
        if key == "trigger" and not value:
            block = (
                "# CACAO has no trigger: set one before adding this playbook to playbooks/.\n"
                "# As it stands it answers every incident no other playbook fits.\n" + block
            )
        parts.append(block)
    return comments + "".join(
        p if not p.startswith(("steps:", "trigger:")) else "\n" + p for p in parts
    )


STAGES = tuple(s.value for s in STAGE_ORDER)
