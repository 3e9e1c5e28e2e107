"""Export a stanch playbook as a CACAO 2.0 document, deterministically.

The workflow reads as the planner runs: stages in order, each stage's steps in run order;
steps that do not depend on each other sit side by side under a ``parallel`` step, a
``when`` becomes an ``if-condition`` that keeps the expression, OpenC2 speaks for the
actions it has words for. The stanch extension on the playbook and on every step carries
the rest, so that import rebuilds the playbook exactly. Ids are UUIDv5 under a fixed
namespace and the dates come from the playbook, so exporting twice gives the same bytes.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from typing import Any

from flows.models import Stage
from flows.playbook.cacao.mapping import (
    ACTIVITIES,
    CAPABILITY_CATEGORY,
    EXTENSION_DEFINITION,
    EXTENSION_ID,
    INCIDENT_VARIABLES,
    NAMESPACE,
    OPENC2_BY_ACTION,
    OPENC2_HEADERS,
    OPENC2_START_LINE,
    PLAYBOOK_TYPES,
    cacao_timestamp,
    identity_of,
    playbook_cacao_id,
    step_uuid,
    variable_for,
)
from flows.playbook.cacao.validate import check_document
from flows.playbook.cacao.written import step_data, trigger_data
from flows.playbook.loader import CompiledStep, LoadedPlaybook, PlaybookError, PlaybookIssue
from flows.playbook.python import PythonPlaybook
from flows.playbook.schema import STAGE_ORDER

ANALYSTS = f"group--{uuid.uuid5(NAMESPACE, 'agent/analysts')}"
"""The agent of the steps stanch reports but does not execute: the SOC's analysts."""

EXECUTABLE_KEYS = frozenset({"type", "name", "commands", "agent", "targets", "step_variables"})
"""Step properties a kept ``cacao`` mapping may not override on an executable step."""

# What a playbook variable stands for, by the incident field it names.
_INCIDENT_PATHS = {path: name for name, (path, _) in INCIDENT_VARIABLES.items()}


def _agent(capability: str) -> tuple[str, dict[str, Any]]:
    key = f"security-category--{uuid.uuid5(NAMESPACE, f'agent/{capability}')}"
    return key, {
        "type": "security-category",
        "name": f"stanch {capability} capability",
        "description": f"The {capability} product stanch is configured with for the tenant",
        "category": [CAPABILITY_CATEGORY[capability]],
    }


def _analysts() -> dict[str, Any]:
    return {
        "type": "group",
        "name": "SOC analysts",
        "description": "stanch lists these steps for an analyst and never executes them",
    }


class _Export:
    def __init__(self, playbook: LoadedPlaybook) -> None:
        self.playbook = playbook
        self.spec = playbook.spec
        self.workflow: dict[str, dict[str, Any]] = {}
        self.agents: dict[str, dict[str, Any]] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.activities = list(dict.fromkeys(a for s in playbook.steps() if (a := _activity(s))))
        self.positions = {
            step.id: (stage, i)
            for stage, steps in self.spec.steps.by_stage()
            for i, step in enumerate(steps)
        }

    def key(self, kind: str, path: str) -> str:
        return f"{kind}--{step_uuid(self.spec.id, self.spec.version, path)}"

    # Values ------------------------------------------------------------------------------
    def value(self, raw: Any, scope: dict[str, dict[str, Any]]) -> Any:
        """A CACAO variable reference for ``{{ item.id }}``-style templates, else the value."""
        if not isinstance(raw, str):
            return raw
        name = variable_for(raw)
        if name is None:
            return raw
        path = raw.strip()[2:-2].strip()
        incident = _INCIDENT_PATHS.get(path)
        if incident is not None:
            self.variables[incident] = {
                "type": "string",
                "description": f"stanch binds this to {path} of the incident",
                "external": True,
            }
            return f"{incident}:value"
        scope[name] = {"type": "string", "description": f"stanch evaluates {raw} here"}
        return f"{name}:value"

    def openc2(self, step: CompiledStep, scope: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        assert step.action is not None
        verb = OPENC2_BY_ACTION.get(step.action.name)
        if verb is None:
            return None
        args = step.step.args
        target = self.value(args.get(verb.argument), scope)
        shapes: dict[str, Any] = {
            "device": {"device_id": target},
            "ipv4_net": target,
            "file": {"hashes": {"sha256": target}},
        }
        command: dict[str, Any] = {
            "action": verb.openc2,
            "target": {verb.target: shapes[verb.target]},
        }
        ttl = args.get("ttl_seconds")
        if isinstance(ttl, int) and not isinstance(ttl, bool):
            command["args"] = {"duration": ttl * 1000}  # OpenC2 durations are milliseconds
        return command

    def commands(
        self, step: CompiledStep, scope: dict[str, dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], str]:
        kind = step.step.kind
        activity = _activity(step)
        extra = {"playbook_activity": activity} if activity else {}
        if step.action is None:
            text = str(getattr(step.step, kind))
            if kind == "notify" and step.step.message:
                text = f"{text}: {step.step.message}"
            self.agents[ANALYSTS] = _analysts()
            return [{"type": "manual", "command": text, **extra}], ANALYSTS
        agent, definition = _agent(step.action.capability.value)
        self.agents[agent] = definition
        command = self.openc2(step, scope)
        if command is not None:
            content = json.dumps(command, sort_keys=True, separators=(",", ":"))
            return [
                {
                    "type": "openc2-http",
                    "command": OPENC2_START_LINE,
                    "headers": OPENC2_HEADERS,
                    "content_b64": base64.b64encode(content.encode()).decode(),
                    **extra,
                }
            ], agent
        args = " ".join(f"{k}={json.dumps(v)}" for k, v in step.step.args.items())
        # No OpenC2 word for it: the stanch action itself, in a command type of its own.
        return [{"type": "stanch", "command": f"{step.action.name} {args}".strip(), **extra}], agent

    # Steps -------------------------------------------------------------------------------
    def action(self, step: CompiledStep, key: str, after: str) -> None:
        scope: dict[str, dict[str, Any]] = {}
        if step.step.for_each is not None:
            scope["__item__"] = {
                "type": "string",
                "description": f"stanch runs this step once per element of {step.step.for_each}",
            }
        commands, agent = self.commands(step, scope)
        stage, position = self.positions[step.id]
        written = step_data(step.step)
        extension = {
            "step_id": step.id,
            "stage": stage.value,
            "position": position,
            **{k: v for k, v in written.items() if k not in ("id", "description", "cacao")},
        }
        body: dict[str, Any] = {"type": "action", "name": step.id}
        if step.step.description:
            body["description"] = step.step.description
        if scope:
            body["step_variables"] = dict(sorted(scope.items()))
        body["commands"] = commands
        body["agent"] = agent
        body["on_completion"] = after
        body["step_extensions"] = {EXTENSION_ID: extension}
        self.workflow[key] = _merge_step(body, step.step.cacao, executable=step.action is not None)

    def entry(self, step: CompiledStep, after: str) -> str:
        """Write one step (wrapped in its if-condition) and return the key to enter it by."""
        stage = step.stage.value
        key = self.key("action", f"{stage}/{step.id}")
        if step.step.when is None:
            self.action(step, key, after)
            return key
        condition = self.key("if-condition", f"{stage}/{step.id}/when")
        branch_end = self.key("end", f"{stage}/{step.id}/when-end")
        self.workflow[condition] = {
            "type": "if-condition",
            "name": f"when {step.id}",
            "description": "stanch runs the step only when this expression is true",
            "condition": step.step.when,
            "on_true": key,
            "on_completion": after,
        }
        self.action(step, key, branch_end)
        self.workflow[branch_end] = {"type": "end"}
        return condition

    def block(self, stage: Stage, index: int, steps: Sequence[CompiledStep], after: str) -> str:
        if len(steps) == 1:
            return self.entry(steps[0], after)
        key = self.key("parallel", f"{stage.value}/block-{index}")
        self.workflow[key] = {
            "type": "parallel",
            "name": f"{stage.value}: {', '.join(s.id for s in steps)}",
            "description": "steps that do not depend on each other; stanch runs them in order",
            "next_steps": [],
            "on_completion": after,
        }
        for step in steps:
            end = self.key("end", f"{stage.value}/{step.id}/branch-end")
            self.workflow[key]["next_steps"].append(self.entry(step, end))
            self.workflow[end] = {"type": "end"}
        return key

    def build(self) -> dict[str, Any]:
        blocks = [
            (stage, i, run)
            for stage in STAGE_ORDER
            for i, run in enumerate(_runs(self.playbook.stages.get(stage, ())))
        ]
        start = self.key("start", "start")
        end = self.key("end", "end")
        self.workflow[start] = {"type": "start", "on_completion": end}
        # Built back to front so that each block knows the block after it.
        after = end
        for stage, i, run in reversed(blocks):
            after = self.block(stage, i, run, after)
        self.workflow[start]["on_completion"] = after
        self.workflow[end] = {"type": "end"}
        return self.document()

    def document(self) -> dict[str, Any]:
        spec = self.spec
        stages = [s for s, steps in spec.steps.by_stage() if steps]
        doc: dict[str, Any] = {
            "type": "playbook",
            "spec_version": "cacao-2.0",
            "id": playbook_cacao_id(spec.id),
            "name": spec.title,
        }
        if spec.description:
            doc["description"] = spec.description
        if self.activities:
            doc["playbook_types"] = [PLAYBOOK_TYPES[s] for s in stages]
            doc["playbook_activities"] = self.activities
        assert spec.created is not None and spec.modified is not None
        doc["created_by"] = identity_of(spec.owner)
        doc["created"] = cacao_timestamp(spec.created)
        doc["modified"] = cacao_timestamp(spec.modified)
        if spec.attack:
            doc["external_references"] = [
                {
                    "name": f"MITRE ATT&CK {t}",
                    "source": "mitre-attack",
                    "external_id": t,
                    "url": f"https://attack.mitre.org/techniques/{t.replace('.', '/')}/",
                }
                for t in spec.attack
            ]
        if self.variables:
            doc["playbook_variables"] = dict(sorted(self.variables.items()))
        doc["workflow_start"] = self.key("start", "start")
        doc["workflow"] = _in_order(self.workflow, doc["workflow_start"])
        doc["agent_definitions"] = dict(sorted(self.agents.items()))
        doc["extension_definitions"] = {EXTENSION_ID: EXTENSION_DEFINITION}
        extension: dict[str, Any] = {
            "playbook_id": spec.id,
            "version": spec.version,
            "owner": spec.owner,
        }
        if "attack" in spec.model_fields_set:
            extension["attack"] = list(spec.attack)
        extension["trigger"] = trigger_data(spec.trigger)
        doc["playbook_extensions"] = {EXTENSION_ID: extension}
        return _merge_playbook(doc, spec.cacao)


def _activity(step: CompiledStep) -> str | None:
    return ACTIVITIES.get(step.action.name if step.action else step.step.kind)


def _runs(steps: Sequence[CompiledStep]) -> list[list[CompiledStep]]:
    """Consecutive steps (in run order) none of which depends on another of the same run."""
    runs: list[list[CompiledStep]] = []
    for step in steps:
        if runs and not step.depends & {s.id for s in runs[-1]}:
            runs[-1].append(step)
        else:
            runs.append([step])
    return runs


def _in_order(workflow: dict[str, dict[str, Any]], start: str) -> dict[str, dict[str, Any]]:
    """Steps in the order a reader follows them from the start (then any others)."""
    order: list[str] = []
    todo = [start]
    while todo:
        key = todo.pop(0)
        if key in order or key not in workflow:
            continue
        order.append(key)
        step = workflow[key]
        todo[:0] = [step[k] for k in ("on_true",) if k in step] + list(step.get("next_steps", []))
        if "on_completion" in step:
            todo.append(step["on_completion"])
    order += [k for k in workflow if k not in order]
    return {k: workflow[k] for k in order}


def _merge_step(
    body: dict[str, Any], kept: dict[str, Any] | None, *, executable: bool
) -> dict[str, Any]:
    """The generated step plus what import kept of the CACAO step (never what stanch runs)."""
    if not isinstance(kept, dict) or not kept:
        return body
    merged = dict(body)
    for key, value in kept.items():
        if key == "step_extensions" and isinstance(value, dict):
            merged["step_extensions"] = {**value, **body.get("step_extensions", {})}
        elif key in ("on_completion", "on_success", "on_failure", "step_extensions"):
            continue  # the workflow's links are stanch's
        elif executable and key in EXECUTABLE_KEYS:
            continue  # what an executable step runs is stanch's action alone
        else:
            merged[key] = value
    return merged


def _merge_playbook(doc: dict[str, Any], kept: dict[str, Any] | None) -> dict[str, Any]:
    if not kept:
        return doc
    merged = dict(doc)
    for key, value in kept.items():
        if key == "workflow" and isinstance(value, dict):
            # What other tools added to stanch's structural steps (start, end, conditions),
            # by step id; an id this version no longer has is dropped with its step.
            merged["workflow"] = {
                k: _merge_step(step, value.get(k), executable=True)
                for k, step in doc["workflow"].items()
            }
        elif isinstance(value, dict) and isinstance(doc.get(key), dict):
            merged[key] = {**value, **doc[key]}
        elif key not in doc:
            merged[key] = value
    return merged


def build_document(playbook: LoadedPlaybook) -> dict[str, Any]:
    """The document, unchecked; the playbook must have its dates (import compares with it)."""
    return _Export(playbook).build()


def export_document(playbook: LoadedPlaybook) -> dict[str, Any]:
    """The CACAO 2.0 document of a playbook, checked against the schemas and the rules.

    Raises:
        PlaybookError: the playbook has no ``created``/``modified`` dates (``missing-field``).
        CacaoError: the document fails the checks (a kept ``cacao`` mapping broke it).
    """
    if isinstance(playbook, PythonPlaybook):
        # Its steps are code, and CACAO has no word for "run this Python": exporting the
        # metadata alone would publish a playbook that does nothing.
        raise PlaybookError(
            [
                PlaybookIssue(
                    playbook.file,
                    1,
                    "invalid-value",
                    "a Python playbook's steps are code; CACAO export takes YAML playbooks",
                )
            ]
        )
    spec = playbook.spec
    missing = [name for name in ("created", "modified") if getattr(spec, name) is None]
    if missing:
        raise PlaybookError(
            [
                PlaybookIssue(
                    playbook.file,
                    1,
                    "missing-field",
                    f"{' and '.join(missing)}: a CACAO export needs the date the playbook was "
                    "first written (created) and the date of this version (modified)",
                )
            ]
        )
    doc = _Export(playbook).build()
    check_document(export_text(doc), playbook.file)
    return doc


def export_text(doc: dict[str, Any]) -> str:
    """The document as JSON text: two-space indent, UTF-8 as is, one final newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
