"""Import a CACAO playbook written elsewhere: execute what stanch can, list the rest.

The workflow is walked from its start in the order it runs. An action step whose every
command is OpenC2 that maps to a capability (contain or allow a device, deny or allow an
address or a file hash) becomes that stanch action, planned through policy and approval
like any other. Everything else (``ssh``, ``bash``, ``powershell``, ``http-api``,
``manual``, a ``playbook-action``, a step inside a loop or a failure branch) becomes a
``manual`` step that plans and reports list as not executed. Steps under an
``if-condition`` or a ``switch-condition`` case wait for an analyst to confirm the
condition, because stanch cannot evaluate STIX patterns over CACAO variables.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flows.models import Stage
from flows.playbook.cacao.mapping import (
    INCIDENT_VARIABLES,
    LINKS,
    OPENC2_BY_COMMAND,
    OpenC2Verb,
    slug,
    variable_reference,
)
from flows.playbook.cacao.rows import MappingRow, literal, one_line, parse_imported
from flows.playbook.cacao.validate import decode_base64, pointer
from flows.playbook.cacao.written import dump_yaml, playbook_data
from flows.playbook.loader import LoadedPlaybook
from flows.playbook.schema import ACTIONS, STAGE_ORDER

# Top-level properties import maps or rebuilds; everything else is kept for re-export.
_MAPPED = frozenset(
    {
        "type",
        "spec_version",
        "id",
        "name",
        "description",
        "created_by",
        "created",
        "modified",
        "workflow_start",
        "workflow",
        "workflow_exception",
        "playbook_types",
        "playbook_activities",
        "derived_from",
        "playbook_processing_summary",
    }
)
# Never kept: credentials have no place in a playbook; signatures break with any change.
_DROPPED = {
    "authentication_info_definitions": "credentials never live in stanch playbooks; give "
    "stanch its vendor credentials as STANCH_* settings",
    "signatures": "the import changes the document, so its signatures no longer hold",
}
_STEP_STRUCTURE = ("type", *LINKS, "next_steps", "condition", "cases", "switch")
_ARGS_IGNORED = frozenset({"response_requested"})
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class _Condition:
    text: str
    loop: bool = False
    failure: bool = False


@dataclass
class _Target:
    """A resolved OpenC2 target value: a literal, or a template over the incident."""

    value: str
    template: bool = False
    each: bool = False  # the value is a list: the step runs once per element


@dataclass
class _Executable:
    verb: OpenC2Verb
    target: _Target
    by_hostname: bool = False
    ttl_seconds: int | None = None
    notes: list[str] = field(default_factory=list)


class _Foreign:
    def __init__(self, doc: dict[str, Any], file: str) -> None:
        self.doc = doc
        self.file = file
        self.workflow: dict[str, Any] = doc["workflow"]
        self.steps: dict[Stage, list[dict[str, Any]]] = {s: [] for s in STAGE_ORDER}
        self.rows: list[MappingRow] = []
        self.pointers: dict[str, str] = {}
        self.ids: set[str] = set()
        self.stage = Stage.INVESTIGATE
        self.visited: set[str] = set()

    # Walking -----------------------------------------------------------------------------
    def walk(self, start: str, context: tuple[_Condition, ...]) -> None:
        stack: list[tuple[str, tuple[_Condition, ...]]] = [(start, context)]
        while stack:
            key, ctx = stack.pop()
            if key in self.visited or key not in self.workflow:
                continue
            self.visited.add(key)
            step = self.workflow[key]
            stack.extend(reversed(self.visit(key, step, ctx)))

    def visit(
        self, key: str, step: dict[str, Any], ctx: tuple[_Condition, ...]
    ) -> list[tuple[str, tuple[_Condition, ...]]]:
        kind = step["type"]
        name = one_line(step.get("name") or kind, 120)
        after = [(step[k], ctx) for k in ("on_completion", "on_success") if k in step]
        if "on_failure" in step:
            failed = _Condition(f"step {name!r} failed", failure=True)
            after.append((step["on_failure"], (*ctx, failed)))
        if kind == "action":
            self.action(key, step, name, ctx)
            return after
        if kind == "playbook-action":
            self.manual(
                key,
                step,
                name,
                ctx,
                [_playbook_action(step)],
                ["stanch playbooks cannot call other playbooks; run it by hand"],
            )
            return after
        structure = {
            "start": "start",
            "end": "end of a branch",
            "parallel": "its branches run one after the other",
            "if-condition": "the steps under it wait for an analyst to confirm the condition",
            "while-condition": "stanch does not loop: the steps under it are manual",
            "switch-condition": "each case's steps wait for an analyst to confirm the case",
        }[kind]
        self.rows.append(MappingRow(key, name, (), "structure", f"{kind}: {structure}"))
        if kind == "parallel":
            return [(s, ctx) for s in step["next_steps"]] + after
        if kind == "if-condition":
            cond = one_line(step["condition"], 160)
            branches = [(step["on_true"], (*ctx, _Condition(f"{cond} is true")))]
            if "on_false" in step:
                branches.append((step["on_false"], (*ctx, _Condition(f"{cond} is false"))))
            return branches + after
        if kind == "while-condition":
            loop = _Condition(f"repeated while {one_line(step['condition'], 160)}", loop=True)
            return [(step["on_true"], (*ctx, loop)), *after]
        if kind == "switch-condition":
            switch = one_line(step["switch"], 120)
            return [
                (target, (*ctx, _Condition(_case(switch, case))))
                for case, target in step["cases"].items()
            ] + after
        return after

    # Steps -------------------------------------------------------------------------------
    def new_id(self, name: str) -> str:
        base = slug(name, separator="_", limit=56) or "step"
        sid, n = base, 2
        while sid in self.ids:
            sid, n = f"{base}_{n}", n + 1
        self.ids.add(sid)
        return sid

    def add(self, key: str, stage: Stage, step: dict[str, Any]) -> str:
        self.steps[stage].append(step)
        self.pointers[step["id"]] = pointer("workflow", key)
        return str(step["id"])

    def action(
        self, key: str, step: dict[str, Any], name: str, ctx: tuple[_Condition, ...]
    ) -> None:
        reasons: list[str] = []
        if any(c.loop for c in ctx):
            reasons.append("it sits inside a while-condition loop, which stanch does not run")
        if any(c.failure for c in ctx):
            reasons.append("it runs only when another step fails; stanch has no failure branches")
        found = [self.openc2(step, c) for c in step["commands"]]
        executable = [f for f in found if isinstance(f, _Executable)]
        reasons += [f for f in found if isinstance(f, str)]
        if reasons:
            self.manual(
                key,
                step,
                name,
                ctx,
                [_describe(c, step, self.doc) for c in step["commands"]],
                reasons,
            )
            return
        made: list[str] = []
        notes: list[str] = []
        for i, command in enumerate(executable):
            made += self.executable(
                key, step, name if i == 0 else f"{name} {i + 1}", command, ctx, first=i == 0
            )
            notes += command.notes
        actions = ", ".join(dict.fromkeys(c.verb.action for c in executable))
        detail = f"{actions}, through policy and approval"
        if ctx:
            detail += "; waits for an analyst to confirm " + " and ".join(c.text for c in ctx)
        if notes:
            detail += "; " + "; ".join(notes)
        self.rows.append(MappingRow(key, name, tuple(made), "action", detail))

    def executable(
        self,
        key: str,
        step: dict[str, Any],
        name: str,
        command: _Executable,
        ctx: tuple[_Condition, ...],
        *,
        first: bool,
    ) -> list[str]:
        spec = ACTIONS[command.verb.action]
        stage = next(
            (s for s in STAGE_ORDER[STAGE_ORDER.index(self.stage) :] if s in spec.stages),
            min(spec.stages, key=STAGE_ORDER.index),
        )
        self.stage = max(self.stage, stage, key=STAGE_ORDER.index)
        sid = self.new_id(name)
        made: list[str] = []
        out: dict[str, Any] = {"id": sid}
        if step.get("description"):
            out["description"] = one_line(step["description"])
        out["action"] = spec.name
        if ctx:
            conditions = " and ".join(c.text for c in ctx)
            out["confirm"] = literal(f"CACAO condition: does it hold that {conditions}?")
        target = command.target
        args: dict[str, Any] = {}
        if command.by_hostname:
            lookup = self.new_id(f"{sid}_host")
            found: dict[str, Any] = {
                "id": lookup,
                "description": f"Find the host {name} names",
                "action": "edr.find_host",
            }
            if target.each:
                found["for_each"] = target.value
                found["args"] = {"hostname": "{{ item }}"}
                out["for_each"] = f"{{{{ steps.{lookup}.result }}}}"
                args[command.verb.argument] = "{{ item.id }}"
                out["label"] = "{{ item.hostname }}"
            else:
                found["args"] = {"hostname": target.value}
                out["when"] = f"{{{{ steps.{lookup}.result is not none }}}}"
                args[command.verb.argument] = f"{{{{ steps.{lookup}.result.id }}}}"
                out["label"] = f"{{{{ steps.{lookup}.result.hostname }}}}"
            made.append(self.add(key, Stage.INVESTIGATE, found))
        elif target.each:
            out["for_each"] = target.value
            args[command.verb.argument] = "{{ item }}"
        else:
            args[command.verb.argument] = target.value
        if "ttl_seconds" in spec.params:
            args["ttl_seconds"] = command.ttl_seconds
        if "reason" in spec.params:
            args["reason"] = "stanch {{ incident.id }}: CACAO " + literal(name)
        out["args"] = args
        if first:
            kept = {
                k: v
                for k, v in step.items()
                if k
                not in (
                    *_STEP_STRUCTURE,
                    "commands",
                    "agent",
                    "targets",
                    "name",
                    "description",
                    "step_variables",
                    "in_args",
                    "out_args",
                )
            }
            if kept:
                out["cacao"] = kept
        made.append(self.add(key, stage, out))
        return made

    def manual(
        self,
        key: str,
        step: dict[str, Any],
        name: str,
        ctx: tuple[_Condition, ...],
        texts: list[str],
        reasons: list[str],
    ) -> None:
        sid = self.new_id(name)
        what = "; then ".join(t for t in texts if t) or name
        prefix = f"only if {' and '.join(c.text for c in ctx)}: " if ctx else ""
        out: dict[str, Any] = {"id": sid}
        if step.get("description"):
            out["description"] = one_line(step["description"])
        out["manual"] = literal(one_line(f"{prefix}{name}: {what}", 2000))
        kept = {
            k: v
            for k, v in step.items()
            if k not in _STEP_STRUCTURE
            and k not in ("description", "playbook_id", "playbook_version", "in_args", "out_args")
        }
        if kept:
            out["cacao"] = kept
        self.add(key, self.stage, out)
        self.rows.append(
            MappingRow(
                key, name, (sid,), "manual", "not executed: " + "; ".join(dict.fromkeys(reasons))
            )
        )

    # OpenC2 ------------------------------------------------------------------------------
    def openc2(self, step: dict[str, Any], command: dict[str, Any]) -> _Executable | str:
        kind = command.get("type")
        if kind == "manual":
            return "a manual step: an analyst does it"
        if kind != "openc2-http":
            return f"{kind} commands are never run by stanch"
        try:
            body = json.loads(decode_base64(command["content_b64"]))
        except (KeyError, ValueError):
            return "the OpenC2 content is not JSON"
        # [U] OpenC2 over HTTPS 1.0 sends the bare command; 1.1 wraps it in a message
        # (headers, body.openc2.request). Both readings are accepted.
        request = _dig(body, "body", "openc2", "request") if "body" in body else body
        if not isinstance(request, dict) or not isinstance(request.get("target"), dict):
            return "the OpenC2 content has no command with a target"
        action, target = str(request.get("action")), request["target"]
        if len(target) != 1:
            return "an OpenC2 target names exactly one kind of target"
        [(kind_of, value)] = target.items()
        verb = OPENC2_BY_COMMAND.get((action, kind_of))
        if verb is None:
            return f"OpenC2 {action} {kind_of} has no stanch capability"
        args = request.get("args") or {}
        if not isinstance(args, dict):
            return "OpenC2 args must be an object"
        return self.command(step, verb, value, args)

    def command(
        self, step: dict[str, Any], verb: OpenC2Verb, value: Any, args: dict[str, Any]
    ) -> _Executable | str:
        ttl: int | None = None
        for name, arg in args.items():
            if name == "duration" and verb.action == "firewall.block_ip":
                if not isinstance(arg, int) or isinstance(arg, bool) or arg <= 0:
                    return f"duration {arg!r} is not a positive number of milliseconds"
                ttl = math.ceil(arg / 1000)
            elif isinstance(arg, dict) and "device_containment" in arg:
                # [U] the Endpoint Response profile's own arguments sit under its namespace.
                if arg["device_containment"] != "network_isolation":
                    kind = arg["device_containment"]
                    return (
                        f"device_containment {kind!r}: stanch isolates hosts from the network only"
                    )
            elif name not in _ARGS_IGNORED and not isinstance(arg, dict):
                return f"the OpenC2 argument {name!r} has no stanch equivalent"
        if verb.target == "device":
            if not isinstance(value, dict):
                return "an OpenC2 device is an object (device_id or hostname)"
            if "device_id" in value:
                target = self.value(step, value["device_id"], "device_id")
                return _Executable(verb, target) if isinstance(target, _Target) else target
            named = value.get("hostname", value.get("idn_hostname"))
            target = self.value(step, named, "hostname")
            if isinstance(target, str):
                return target
            return _Executable(
                verb, target, by_hostname=True, notes=["looks the host up in the EDR by name first"]
            )
        if verb.target == "ipv4_net":
            address = _ipv4(value)
            if address is None:
                shown = json.dumps(value)[:60]
                return f"{shown} is not one address: stanch blocks single IPv4 addresses"
            target = self.value(step, address, "ipv4")
        else:
            hashes = value.get("hashes") if isinstance(value, dict) else None
            sha256 = hashes.get("sha256") if isinstance(hashes, dict) else None
            if sha256 is None:
                return "stanch blocks files by SHA-256 hash only"
            target = self.value(step, sha256, "sha256")
        if isinstance(target, str):
            return target
        executable = _Executable(verb, target, ttl_seconds=ttl)
        if verb.action == "firewall.block_ip" and ttl is None:
            executable.notes.append("no duration: the block never expires")
        return executable

    def value(self, step: dict[str, Any], raw: Any, what: str) -> _Target | str:
        if not isinstance(raw, str) or not raw:
            return f"the {what} is not a string"
        name = variable_reference(raw)
        if name is None:
            return _checked(raw, what)
        if name in INCIDENT_VARIABLES:
            path, is_list = INCIDENT_VARIABLES[name]
            return _Target(f"{{{{ {path} }}}}", template=True, each=is_list)
        declared = {
            **(self.doc.get("playbook_variables") or {}),
            **(step.get("step_variables") or {}),
        }
        variable = declared.get(name)
        if (
            isinstance(variable, dict)
            and isinstance(variable.get("value"), str)
            and not variable.get("external")
        ):
            return _checked(variable["value"], what)
        known = ", ".join(INCIDENT_VARIABLES)
        return (
            f"no value for {name}: stanch binds only its incident variables ({known}) and "
            "variables with a value"
        )


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _case(switch: str, case: str) -> str:
    if case == "default":
        return f"no other case of {switch} matches"
    return f"{switch} is {case!r}"


def _checked(text: str, what: str) -> _Target | str:
    if what == "ipv4":
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            return f"{text[:60]!r} is not an IPv4 address"
    if what == "sha256":
        if not _SHA256.match(text):
            return f"{text[:80]!r} is not a SHA-256 hash"
        text = text.lower()
    return _Target(literal(text))


def _ipv4(value: Any) -> str | None:
    # [U] the language specification writes IPv4-Net as a CIDR string; some examples use
    # an array. Both are read; only a single address (no prefix or /32) is accepted.
    if isinstance(value, list):
        single = len(value) == 1 or (len(value) == 2 and value[1] == 32)
        if not (single and isinstance(value[0], str)):
            return None
        value = value[0]
    if not isinstance(value, str):
        return None
    address, _, prefix = value.partition("/")
    return address if prefix in ("", "32") else None


def _decoded_text(command: dict[str, Any]) -> str:
    if "command" in command:
        return str(command["command"])
    if "command_b64" in command:
        try:
            return decode_base64(command["command_b64"]).decode("utf-8", "replace")
        except ValueError:
            return ""
    return str(command.get("description", ""))


def _names(doc: dict[str, Any], table: str, ids: list[str]) -> str:
    defined = doc.get(table) or {}
    named = [defined[i].get("name", i) if isinstance(defined.get(i), dict) else i for i in ids]
    return ", ".join(one_line(str(n), 60) for n in named)


def _describe(command: dict[str, Any], step: dict[str, Any], doc: dict[str, Any]) -> str:
    kind = command.get("type", "?")
    text = one_line(_decoded_text(command), 600)
    where = _names(doc, "target_definitions", step.get("targets") or [])
    agent = _names(doc, "agent_definitions", [step["agent"]] if "agent" in step else [])
    if kind == "manual":
        return text or one_line(str(command.get("description", "")))
    if kind == "openc2-http":
        try:
            content = json.dumps(json.loads(decode_base64(command.get("content_b64", ""))))
        except ValueError:
            content = "(not JSON)"
        actuator = where or agent or "the actuator"
        return f"send the OpenC2 command {one_line(content, 400)} to {actuator}"
    on = f" on {where}" if where else (f" by {agent}" if agent else "")
    return f"{kind} command{on}: {text}"


def _playbook_action(step: dict[str, Any]) -> str:
    version = f" (version {step['playbook_version']})" if "playbook_version" in step else ""
    return f"run the CACAO playbook {step['playbook_id']}{version}"


def _kept_playbook(doc: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {k: v for k, v in doc.items() if k not in _MAPPED and k not in _DROPPED}
    for table in ("agent_definitions", "target_definitions"):
        if table in kept:
            kept[table] = {
                k: {p: v for p, v in entry.items() if p != "authentication_info"}
                for k, entry in kept[table].items()
            }
    kept["derived_from"] = [doc["id"], *[d for d in doc.get("derived_from", []) if d != doc["id"]]]
    return kept


def import_foreign(
    doc: dict[str, Any], file: str, playbook_id: str | None
) -> tuple[LoadedPlaybook, str, list[MappingRow]]:
    """A foreign CACAO document (already validated) as a stanch playbook.

    Returns:
        The playbook, its YAML text, and what became of every CACAO step.

    Raises:
        CacaoError: the playbook it maps to is not valid stanch (``cacao-stanch``).
    """
    work = _Foreign(doc, file)
    work.walk(doc["workflow_start"], ())
    if "workflow_exception" in doc:
        work.walk(doc["workflow_exception"], (_Condition("the playbook failed", failure=True),))
    for key, step in doc["workflow"].items():
        if key not in work.visited:
            name = one_line(step.get("name") or step["type"], 120)
            work.rows.append(
                MappingRow(
                    key, name, (), "left out", "not reachable from workflow_start: it never runs"
                )
            )
    for prop, why in _DROPPED.items():
        if prop in doc:
            work.rows.append(MappingRow("", prop, (), "dropped", why))
    pid = playbook_id or slug(doc["name"], separator="-") or "imported"
    data: dict[str, Any] = {
        "id": pid,
        "version": 1,
        "title": one_line(doc["name"]) or pid,
        "owner": doc["created_by"],
        "created": _timestamp(doc["created"]),
        "modified": _timestamp(doc["modified"]),
    }
    if doc.get("description"):
        data["description"] = doc["description"]
    data["trigger"] = {}
    data["steps"] = {s.value: steps for s, steps in work.steps.items() if steps}
    data["cacao"] = _kept_playbook(doc)
    if not data["steps"]:
        data["steps"] = {"report": [{"id": "nothing", "manual": "the CACAO playbook has no steps"}]}
    loaded = parse_imported(dump_yaml(data, []), file, work.pointers, "")
    header = [
        f"Imported from the CACAO 2.0 playbook {doc['id']} ({data['title']}).",
        "Steps stanch can execute go through policy and approval; manual steps are listed,",
        "never executed. `cacao:` fields keep what stanch has no field for; leave them as is.",
    ]
    return loaded, dump_yaml(playbook_data(loaded.spec), header), work.rows


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
