"""Import a CACAO 2.0 document as a stanch playbook.

A document stanch exported carries the stanch extension: the playbook is rebuilt from it
exactly, and the document is refused if its workflow says anything else (what another
tool shows must be what stanch runs). What other tools added (their extensions, labels,
layout) is kept in ``cacao`` fields and written back on export. Any other document is a
foreign playbook (:mod:`flows.playbook.cacao.foreign`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft7Validator

from flows.playbook.cacao.export import build_document
from flows.playbook.cacao.foreign import import_foreign
from flows.playbook.cacao.mapping import EXTENSION_ID, LINKS
from flows.playbook.cacao.rows import MappingRow, parse_imported
from flows.playbook.cacao.validate import (
    CacaoError,
    CacaoIssue,
    CacaoRule,
    check_document,
    decode_base64,
    pointer,
)
from flows.playbook.cacao.written import STAGES, dump_yaml, playbook_data
from flows.playbook.loader import LoadedPlaybook
from flows.playbook.schema import ACTIONS

MERGED = (
    "agent_definitions",
    "target_definitions",
    "playbook_variables",
    "extension_definitions",
    "playbook_extensions",
)
"""Top-level dictionaries whose entries other tools may add to beside stanch's own."""


@dataclass(frozen=True)
class CacaoImport:
    """A CACAO document as a stanch playbook.

    Attributes:
        playbook: the playbook, valid as ``stanch playbook validate`` checks it.
        yaml: its YAML text, ready to write to ``<id>.yaml``.
        rows: what became of each CACAO step, in workflow order.
        foreign: the document was not exported by stanch (no stanch extension).
        cacao_id: the document's ``playbook--…`` id.
        name: the document's name.
    """

    playbook: LoadedPlaybook
    yaml: str
    rows: tuple[MappingRow, ...]
    foreign: bool
    cacao_id: str
    name: str


@cache
def _extension_validators() -> tuple[Draft7Validator, Draft7Validator]:
    text = resources.files("flows.playbook.cacao").joinpath("stanch-extension.json").read_text()
    schema = json.loads(text)
    return (
        Draft7Validator({**schema, "$ref": "#/definitions/playbook"}),
        Draft7Validator({**schema, "$ref": "#/definitions/step"}),
    )


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _decoded(value: Any) -> Any:
    try:
        return json.loads(decode_base64(value))
    except ValueError:
        return value


def same(a: Any, b: Any) -> bool:
    """Equal JSON, where OpenC2 content counts by its decoded JSON, not its base64 bytes."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return False
        return all(
            _decoded(a[k]) == _decoded(b[k]) if k == "content_b64" else same(a[k], b[k]) for k in a
        )
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


class _FromStanch:
    def __init__(self, doc: dict[str, Any], file: str) -> None:
        self.doc = doc
        self.file = file
        self.issues: list[CacaoIssue] = []
        self.step_keys: dict[str, str] = {}  # stanch step id -> workflow key
        self.reported: set[str] = set()  # workflow keys of hunt/notify/manual steps

    def issue(self, where: str, rule: CacaoRule, message: str) -> None:
        self.issues.append(CacaoIssue(self.file, where, rule, message))

    def extension(self) -> dict[str, Any]:
        playbook_check, step_check = _extension_validators()
        where = pointer("playbook_extensions", EXTENSION_ID)
        data = self.doc["playbook_extensions"][EXTENSION_ID]
        for error in playbook_check.iter_errors(data):
            self.issue(where + pointer(*error.absolute_path), CacaoRule.EXTENSION, error.message)
        steps: dict[str, list[tuple[int, str, dict[str, Any]]]] = {s: [] for s in STAGES}
        for key, step in self.doc["workflow"].items():
            ext = (step.get("step_extensions") or {}).get(EXTENSION_ID)
            if ext is None:
                continue
            at = pointer("workflow", key, "step_extensions", EXTENSION_ID)
            errors = list(step_check.iter_errors(ext))
            for error in errors:
                self.issue(at + pointer(*error.absolute_path), CacaoRule.EXTENSION, error.message)
            if errors:
                continue
            if step.get("type") != "action":
                self.issue(
                    at, CacaoRule.EXTENSION, "the stanch step extension belongs on action steps"
                )
                continue
            if ext["step_id"] in self.step_keys:
                self.issue(
                    at + "/step_id",
                    CacaoRule.EXTENSION,
                    f"step_id {ext['step_id']!r} is used by two steps",
                )
                continue
            self.step_keys[ext["step_id"]] = key
            if not {"action"} & ext.keys():
                self.reported.add(key)
            steps[ext["stage"]].append((ext["position"], key, ext))
        if self.issues:
            raise CacaoError(self.issues)
        data = {
            "id": data["playbook_id"],
            "version": data["version"],
            "title": self.doc["name"],
            "owner": data["owner"],
            "created": _timestamp(self.doc["created"]),
            "modified": _timestamp(self.doc["modified"]),
            **({"description": self.doc["description"]} if "description" in self.doc else {}),
            **({"attack": data["attack"]} if "attack" in data else {}),
            "trigger": data["trigger"],
            "steps": {},
        }
        for stage, found in steps.items():
            if found:
                data["steps"][stage] = [
                    self.step(key, ext) for _, key, ext in sorted(found, key=lambda f: f[0])
                ]
        return data

    def step(self, key: str, ext: dict[str, Any]) -> dict[str, Any]:
        step = {"id": ext["step_id"]}
        description = self.doc["workflow"][key].get("description")
        if description is not None:
            step["description"] = description
        step.update({k: v for k, v in ext.items() if k not in ("step_id", "stage", "position")})
        return step

    def pointers(self) -> dict[str, str]:
        return {
            sid: pointer("workflow", key, "step_extensions", EXTENSION_ID)
            for sid, key in self.step_keys.items()
        }

    def differences(
        self, expected: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """What other tools added (kept), per playbook and per stanch step; mismatches noted."""
        kept: dict[str, Any] = {}
        for key, value in self.doc.items():
            if key == "workflow":
                continue
            if key not in expected:
                kept[key] = value
            elif key in MERGED and isinstance(value, dict):
                for entry, inner in value.items():
                    if entry not in expected[key]:
                        kept.setdefault(key, {})[entry] = inner
                    elif not same(inner, expected[key][entry]):
                        self.mismatch(pointer(key, entry), expected[key][entry], inner)
            elif not same(value, expected[key]):
                self.mismatch(pointer(key), expected[key], value)
        for key in expected.keys() - self.doc.keys():
            self.mismatch(pointer(key), expected[key], None)
        owners = {key: sid for sid, key in self.step_keys.items()}
        kept_steps: dict[str, dict[str, Any]] = {}
        workflow, generated = self.doc["workflow"], expected["workflow"]
        for key in workflow.keys() - generated.keys():
            self.issue(
                pointer("workflow", key),
                CacaoRule.MISMATCH,
                "this step is not in the playbook the stanch extension describes; " + _HOW,
            )
        for key in generated.keys() - workflow.keys():
            self.issue(
                pointer("workflow"),
                CacaoRule.MISMATCH,
                f"step {key} of the stanch playbook is missing; " + _HOW,
            )
        for key in sorted(workflow.keys() & generated.keys()):
            extras = self.step_differences(key, workflow[key], generated[key])
            if not extras:
                continue
            if key in owners:
                kept_steps[owners[key]] = extras
            else:
                kept.setdefault("workflow", {})[key] = extras
        return kept, kept_steps

    def step_differences(
        self, key: str, step: dict[str, Any], generated: dict[str, Any]
    ) -> dict[str, Any]:
        extras: dict[str, Any] = {}
        for name, value in step.items():
            where = pointer("workflow", key, name)
            if name == "step_extensions":
                others = {e: v for e, v in value.items() if e != EXTENSION_ID}
                if others:
                    extras["step_extensions"] = others
                mine = (generated.get("step_extensions") or {}).get(EXTENSION_ID)
                if not same(value.get(EXTENSION_ID), mine):
                    self.mismatch(where, mine, value.get(EXTENSION_ID))
            elif name not in generated:
                extras[name] = value
            elif same(value, generated[name]):
                continue
            elif key in self.reported and name not in ("type", *LINKS):
                extras[name] = value  # a step stanch only lists: its text is the author's
            else:
                self.mismatch(where, generated[name], value)
        for name in generated.keys() - step.keys():
            self.mismatch(pointer("workflow", key, name), generated[name], None)
        return extras

    def mismatch(self, where: str, expected: Any, found: Any) -> None:
        want = _show(expected)
        got = "nothing" if found is None else _show(found)
        self.issue(
            where,
            CacaoRule.MISMATCH,
            f"the stanch extension makes this {want} but the document says {got}; " + _HOW,
        )


def _show(value: Any) -> str:
    """A value for a message, with OpenC2 content decoded (the base64 says nothing)."""

    def plain(inner: Any) -> Any:
        if isinstance(inner, dict):
            return {k: _decoded(v) if k == "content_b64" else plain(v) for k, v in inner.items()}
        if isinstance(inner, list):
            return [plain(v) for v in inner]
        return inner

    text = json.dumps(plain(value), ensure_ascii=False)
    return text if len(text) <= 200 else text[:199] + "…"


_HOW = (
    "the workflow was changed outside stanch, so stanch would run something other than what "
    "it shows: export the playbook from stanch again, or remove the stanch extension "
    "(extension_definitions, playbook_extensions, step_extensions) to import the document as "
    "a foreign playbook"
)


def _rows_for_stanch(doc: dict[str, Any], owners: dict[str, str]) -> list[MappingRow]:
    rows: list[MappingRow] = []
    for key, step in doc["workflow"].items():
        name = step.get("name") or step["type"]
        sid = owners.get(key)
        if sid is None:
            rows.append(
                MappingRow(
                    key, name, (), "structure", f"{step['type']}: folded into stanch's stage order"
                )
            )
            continue
        ext = step["step_extensions"][EXTENSION_ID]
        if "action" in ext:
            lookup = ACTIONS[ext["action"]].lookup
            status = "lookup" if lookup else "action"
            detail = f"{ext['stage']}: {ext['action']}" + (
                "" if lookup else ", through policy and approval"
            )
            if ext.get("approval") == "required":
                detail += "; always asks a human"
            if "confirm" in ext:
                detail += "; waits for an analyst to confirm it first"
            if "when" in ext:
                detail += f"; only when {ext['when']}"
        else:
            status = next(k for k in ("hunt", "notify", "manual") if k in ext)
            detail = f"{ext['stage']}: listed for an analyst, never executed"
        rows.append(MappingRow(key, name, (sid,), status, detail))
    return rows


def _import_stanch(doc: dict[str, Any], file: str, playbook_id: str | None) -> CacaoImport:
    work = _FromStanch(doc, file)
    data = work.extension()
    fallback = pointer("playbook_extensions", EXTENSION_ID)
    first = parse_imported(dump_yaml(data, []), file, work.pointers(), fallback)
    kept, kept_steps = work.differences(build_document(first))
    if work.issues:
        raise CacaoError(work.issues)
    if kept:
        data["cacao"] = kept
    for steps in data["steps"].values():
        for step in steps:
            if step["id"] in kept_steps:
                step["cacao"] = kept_steps[step["id"]]
    # Without anything kept, the playbook is the one just compared; else parse it again.
    kept_any = kept or kept_steps
    loaded = (
        parse_imported(dump_yaml(data, []), file, work.pointers(), fallback) if kept_any else first
    )
    # The document was validated on the way in: the same document needs no second check.
    again = build_document(loaded)
    if not same(again, doc):
        raise CacaoError([CacaoIssue(file, "", CacaoRule.MISMATCH, _HOW)])
    if playbook_id is not None and playbook_id != data["id"]:
        data["id"] = playbook_id
        loaded = parse_imported(dump_yaml(data, []), file, work.pointers(), fallback)
    header = [
        f"Imported from the CACAO 2.0 document {doc['id']} ({doc['name']}), which stanch",
        f"exported from playbook {work.doc['playbook_extensions'][EXTENSION_ID]['playbook_id']}"
        f" version {data['version']}.",
    ]
    text = dump_yaml(playbook_data(loaded.spec), header)
    rows = _rows_for_stanch(doc, {key: sid for sid, key in work.step_keys.items()})
    return CacaoImport(loaded, text, tuple(rows), False, doc["id"], doc["name"])


def import_document(text: str, file: str, *, playbook_id: str | None = None) -> CacaoImport:
    """Validate a CACAO document and turn it into a stanch playbook, writing nothing.

    Args:
        text: the JSON text.
        file: how to name the document in issues (``-`` for standard input).
        playbook_id: the id to give the playbook (a file's stem); default: the stanch id
            in the extension, else one derived from the CACAO name.

    Returns:
        The playbook, its YAML and the mapping of every CACAO step.

    Raises:
        CacaoError: the document is invalid, its stanch extension disagrees with its
            workflow, or the playbook it maps to is not valid stanch.
    """
    doc = check_document(text, file)
    if EXTENSION_ID in (doc.get("playbook_extensions") or {}):
        return _import_stanch(doc, file, playbook_id)
    loaded, yaml_text, rows = import_foreign(doc, file, playbook_id)
    return CacaoImport(loaded, yaml_text, tuple(rows), True, doc["id"], doc["name"])
