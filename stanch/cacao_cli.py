"""``stanch playbook export`` and ``import``: CACAO 2.0 documents in and out of the library.

Exit codes: 0 done; 1 the operation failed (an invalid document or playbook, a file that
exists, an unreadable file), with nothing written; 2 a usage error or an unknown playbook id.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from cyclopts import Parameter

from flows.playbook import (
    CacaoError,
    CacaoImport,
    PlaybookError,
    export_document,
    export_text,
    import_document,
    load_playbook,
)

_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"


def _write(path: Path, text: str) -> None:
    """Write all of ``text`` or nothing: a temporary file beside ``path``, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _playbook_file(given: str, playbooks: Path) -> Path | None:
    path = Path(given)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    candidate = playbooks / f"{given}.yaml"
    return candidate if candidate.is_file() else None


def export_playbook(
    playbook: str,
    *,
    fmt: Annotated[Literal["cacao"], Parameter(name="--format")] = "cacao",
    output: Annotated[Path | None, Parameter(name=["-o", "--output"])] = None,
    playbooks: Path = Path("playbooks"),
    json_output: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Export a playbook as an OASIS CACAO 2.0 document (JSON), the same bytes every time.

    Args:
        playbook: a playbook id (looked up in --playbooks) or a playbook file.
        fmt: the format; cacao is the only one.
        output: the file to write (default: standard output).
        playbooks: the playbooks directory, for ids.
        json_output: with -o, print what was written as one JSON object.

    Returns:
        0 when exported; 1 for an invalid playbook; 2 for an unknown id.
    """
    path = _playbook_file(playbook, playbooks)
    if path is None and (playbooks / f"{playbook}.py").is_file():
        path = playbooks / f"{playbook}.py"
    if path is None:
        print(f"no playbook {playbook!r} in {playbooks}/ (and no such file)", file=sys.stderr)
        return 2
    try:
        doc = export_document(load_playbook(path))
    except PlaybookError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 1
    except CacaoError as exc:
        for cacao_issue in exc.issues:
            print(cacao_issue, file=sys.stderr)
        return 1
    text = export_text(doc)
    if output is None:
        sys.stdout.write(text)
        return 0
    _write(output, text)
    if json_output:
        print(json.dumps({"file": str(output), "cacao_id": doc["id"], "playbook": path.stem}))
    else:
        print(f"wrote {output} ({doc['id']}, {len(doc['workflow'])} workflow steps)")
    return 0


_PLUMBING = ("start--", "end--", "parallel--")


def _rows_text(result: CacaoImport) -> list[str]:
    rows = [("CACAO step", "stanch step", "what stanch does with it")]
    plumbing = [r for r in result.rows if r.cacao.startswith(_PLUMBING)]
    for row in result.rows:
        if row in plumbing:
            continue
        key = row.cacao or "(playbook)"
        label = f"{key} {row.name}" if row.name != key.split("--")[0] else key
        rows.append((label[:90], ", ".join(row.stanch) or "-", f"{row.status}: {row.detail}"))
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows]
    if plumbing:
        lines.append(
            f"(and {len(plumbing)} start, end and parallel steps: the order of the steps above)"
        )
    return lines


def _target(output: Path | None) -> tuple[Path, str | None] | str:
    """Where to write, and the id that file name forces (``None``: the document decides)."""
    if output is None or output.is_dir() or not output.suffix:
        return (output or Path(".")), None  # a directory, made if need be
    if output.suffix not in (".yaml", ".yml"):
        return f"{output}: give a .yaml file or a directory"
    if not re.fullmatch(_ID, output.stem):
        return f"{output}: the file name must be a playbook id (lowercase letters, digits, -)"
    return output, output.stem


def import_playbook(
    source: Annotated[str, Parameter(allow_leading_hyphen=True)],
    *,
    output: Annotated[Path | None, Parameter(name=["-o", "--output"])] = None,
    force: bool = False,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Import a CACAO 2.0 playbook as stanch YAML, and say what became of each step.

    A playbook stanch exported comes back exactly. Any other playbook keeps the steps
    stanch can execute (OpenC2 commands it maps to a capability; they go through policy and
    approval) and turns everything else into manual steps, listed but never executed.

    Args:
        source: the CACAO JSON file, or - for standard input.
        output: FILE.yaml (the playbook id is its name) or a directory (the file is named
            after the playbook: its stanch id, else one made from the CACAO name);
            default: the current directory.
        force: replace the file if it exists.
        json_output: print the result and the mapping as one JSON object.

    Returns:
        0 when written; 1 when the document is refused or the file exists (nothing is
        written); 2 for a usage error.
    """
    target = _target(output)
    if isinstance(target, str):
        print(target, file=sys.stderr)
        return 2
    where, forced_id = target
    name = "-" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{name}: /: cacao-no-file: cannot read the document: {exc}", file=sys.stderr)
        return 1
    try:
        result = import_document(text, name, playbook_id=forced_id)
    except CacaoError as exc:
        if json_output:
            print(json.dumps({"ok": False, "issues": [i.as_json() for i in exc.issues]}))
        else:
            for issue in exc.issues:
                print(issue)
        return 1
    path = where if forced_id else where / f"{result.playbook.id}.yaml"
    if path.exists() and not force:
        print(
            f"{path} exists; pass --force to replace it, or -o to write elsewhere", file=sys.stderr
        )
        return 1
    _write(path, result.yaml)
    if json_output:
        print(
            json.dumps(
                {
                    "ok": True,
                    "file": str(path),
                    "playbook": result.playbook.id,
                    "cacao_id": result.cacao_id,
                    "exported_by_stanch": not result.foreign,
                    "steps": [row.as_json() for row in result.rows],
                }
            )
        )
        return 0
    origin = "a foreign playbook" if result.foreign else "a stanch export"
    print(f"imported {result.cacao_id} ({origin}) as {result.playbook.id} -> {path}")
    for line in _rows_text(result):
        print(line)
    return 0
