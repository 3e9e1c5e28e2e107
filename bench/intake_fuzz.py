"""Fuzz the intake over HTTP: malformed alerts of every format mixed into valid batches.

The generator starts from the vendors' documented sample payloads (and an OCSF finding),
gives each valid alert an id of its own, and breaks others in the ways that took whole
batches down: integers too large for a 64-bit column, nesting hundreds or thousands
deep, lone UTF-16 surrogates, ``NaN``/``Infinity``, wrong types, missing keys, items
that are not objects, dates out of range; and, as whole bodies, bytes that are not UTF-8
and text that is not JSON.

``python -m bench.intake_fuzz`` posts 10,000 malformed items (in about 1,600 requests)
to a real ``stanch serve`` subprocess and checks what the test checks: no 5xx, no reset
connection, every rejection names its field and is dead-lettered, every valid alert is
stored. It prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "vendor_specs" / "samples"
TENANT = "fuzz"
TOKEN = "fuzz-token-0123456789abcdef"  # noqa: S105 - a bench fixture
FORMATS = ("ocsf", "crowdstrike", "defender", "entra", "okta", "sentinelone")


def _ocsf_sample() -> dict[str, Any]:
    return {
        "class_uid": 2004,
        "category_uid": 2,
        "activity_id": 1,
        "type_uid": 200401,
        "severity_id": 4,
        "time": int(time.time() * 1000),
        "metadata": {"version": "1.8.0", "product": {"name": "Fuzz EDR", "uid": "fuzz"}},
        "finding_info": {"uid": "seed", "title": "fuzzed alert"},
        "device": {"hostname": "WS-FUZZ"},
    }


def samples() -> dict[str, list[dict[str, Any]]]:
    """Valid payloads of each format: the vendors' documented samples."""

    def read(path: str, key: str | None) -> list[dict[str, Any]]:
        data = json.loads((SAMPLES / path).read_text(encoding="utf-8"))
        return list(data if key is None else data[key])

    return {
        "ocsf": [_ocsf_sample()],
        "crowdstrike": read("crowdstrike/alerts_v2_entities_response.json", "resources"),
        "defender": read("defender/alerts_list_response.json", "value"),
        "entra": read("entra/risk_detections_list_response.json", "value"),
        "okta": read("okta/system_log_response.json", None),
        "sentinelone": read("sentinelone/threats_list_response.json", "data"),
    }


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def _set(payload: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        payload = payload[part]
    payload[path[-1]] = value


def _uid_paths(fmt: str, payload: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The leaves that hold the alert's id: changing them changes the finding uid."""
    from flows.detect import normalise

    uid = normalise(fmt, payload).uid
    paths = [p for p, v in _leaves(payload) if isinstance(v, str) and v and v in uid]
    assert paths, f"no leaf of the {fmt} sample carries its uid {uid!r}"
    return paths


@dataclass
class Templates:
    """Per format: valid payloads and the paths of their ids."""

    payloads: dict[str, list[tuple[dict[str, Any], list[tuple[Any, ...]]]]] = field(
        default_factory=dict
    )

    @classmethod
    def load(cls) -> Templates:
        from flows.detect import normalise

        out = cls()
        for fmt, payloads in samples().items():
            usable = []
            for payload in payloads:
                try:
                    normalise(fmt, payload)
                except Exception:  # noqa: S112 - a sample the normaliser refuses is no template
                    continue
                usable.append((payload, _uid_paths(fmt, payload)))
            assert usable, f"no valid {fmt} sample"
            out.payloads[fmt] = usable
        return out


_counter = iter(range(10**9))


def valid_item(rng: random.Random, templates: Templates, fmt: str) -> dict[str, Any]:
    """A valid alert of ``fmt`` with an id no other generated alert has."""
    base, paths = rng.choice(templates.payloads[fmt])
    payload = copy.deepcopy(base)
    uid = f"fz{next(_counter):08d}{rng.randrange(16**6):06x}"
    for path in paths:
        _set(payload, path, uid)
    if fmt == "ocsf":
        payload["time"] = int(time.time() * 1000) - rng.randrange(3_600_000)
    return payload


def _nest(depth: int, inner: str) -> str:
    return "[" * depth + inner + "]" * depth


MUTATIONS = (
    "huge_int",
    "deep",
    "surrogate",
    "non_finite",
    "wrong_type",
    "missing_key",
    "not_object",
    "bad_date",
    "empty_strings",
)


def malformed_item(rng: random.Random, templates: Templates, fmt: str) -> tuple[str, str]:
    """``(mutation, JSON text)`` of one broken alert of ``fmt``."""
    payload = valid_item(rng, templates, fmt)
    leaves = [p for p, _ in _leaves(payload)]
    path = rng.choice(leaves)
    kind = rng.choice(MUTATIONS)
    marker = "\u0007MARK\u0007"
    if kind == "huge_int":
        _set(payload, path, rng.choice([10**30, -(10**25), 2**64, 2**63]))
        if fmt == "ocsf" and rng.random() < 0.5:
            payload["time"] = 10**20
    elif kind == "deep":
        _set(payload, path, marker)
        text = json.dumps(payload)
        depth = rng.choice([33, 40, 300, 1500, 20_000])
        return kind, text.replace(json.dumps(marker), _nest(depth, "1"))
    elif kind == "surrogate":
        _set(payload, path, marker)
        escape = rng.choice(["\\ud800", "\\udfff", "x\\ud83d", "\\udc00y"])
        return kind, json.dumps(payload).replace(json.dumps(marker), f'"{escape}"')
    elif kind == "non_finite":
        _set(payload, path, marker)
        constant = rng.choice(["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
        return kind, json.dumps(payload).replace(json.dumps(marker), constant)
    elif kind == "wrong_type":
        _set(payload, path, rng.choice([[], {}, "x", True, None, 1, -1, 0.5, [1, [2]], {"a": 1}]))
    elif kind == "missing_key":
        parent: Any = payload
        for part in path[:-2]:
            parent = parent[part]
        if len(path) >= 2 and isinstance(parent[path[-2]], dict):
            parent[path[-2]].pop(path[-1], None)
        elif isinstance(payload, dict) and payload:
            payload.pop(rng.choice(list(payload)))
    elif kind == "not_object":
        return kind, json.dumps(rng.choice([42, "alert", None, [], [1, 2], True, 1.5]))
    elif kind == "bad_date":
        _set(payload, path, rng.choice(["99999-01-01T00:00:00Z", "0000-00-00", "-1", "9" * 40]))
    elif kind == "empty_strings":
        for leaf, value in list(_leaves(payload)):
            if isinstance(value, str):
                _set(payload, leaf, rng.choice(["", " ", "\u200b"]))
    return kind, json.dumps(payload)


@dataclass
class Batch:
    """One request: its body and, by index, which items were generated valid."""

    source: str
    body: bytes
    valid: list[int]
    malformed: list[int]
    whole_body_bad: bool = False


def batches(seed: int, malformed_total: int) -> Iterator[Batch]:
    """Requests to the ``fuzz-<format>`` sources until ``malformed_total`` broken items."""
    rng = random.Random(seed)
    templates = Templates.load()
    made = 0
    requests = 0
    while made < malformed_total:
        fmt = rng.choice(FORMATS)
        source = f"fuzz-{fmt}"
        requests += 1
        if requests % 20 == 0:  # one request in twenty is a broken body
            made += 1
            body = rng.choice(
                [b"\xff\xfe{}", b'[{"a": "\xc3\x28"}]', b"{nope", b"[1,", b"", b"\x00"]
            )
            yield Batch(source, body, [], [], whole_body_bad=True)
            continue
        size = rng.randint(1, 12)
        texts: list[str] = []
        valid: list[int] = []
        malformed: list[int] = []
        for index in range(size):
            if rng.random() < 0.5 and made < malformed_total:
                texts.append(malformed_item(rng, templates, fmt)[1])
                malformed.append(index)
                made += 1
            else:
                texts.append(json.dumps(valid_item(rng, templates, fmt)))
                valid.append(index)
        yield Batch(source, ("[" + ",".join(texts) + "]").encode(), valid, malformed)


def sources_config() -> dict[str, dict[str, str]]:
    """One bearer source per format, all of the fuzz tenant."""
    return {
        f"fuzz-{fmt}": {"tenant": TENANT, "format": fmt, "bearer_token": TOKEN} for fmt in FORMATS
    }


@dataclass
class Outcome:
    """What the fuzzed requests got back."""

    requests: int = 0
    malformed: int = 0
    valid: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    resets: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    unnamed_rejections: int = 0
    valid_rejected: int = 0
    bodies_refused: int = 0
    seconds: float = 0.0


async def post_all(base_url: str, requests: list[Batch], *, concurrency: int = 4) -> Outcome:
    """Post every batch and tally the answers."""
    outcome = Outcome(requests=len(requests))
    limit = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:

        async def post(batch: Batch) -> None:
            outcome.valid += len(batch.valid)
            outcome.malformed += len(batch.malformed) + batch.whole_body_bad
            async with limit:
                try:
                    response = await client.post(
                        f"/v1/alerts/{batch.source}",
                        content=batch.body,
                        headers={
                            "authorization": f"Bearer {TOKEN}",
                            "content-type": "application/json",
                        },
                    )
                except httpx.TransportError:
                    outcome.resets += 1
                    return
            outcome.statuses[response.status_code] = (
                outcome.statuses.get(response.status_code, 0) + 1
            )
            if response.status_code == 400:
                outcome.bodies_refused += 1
                return
            if response.status_code not in (202, 207, 422):
                return
            data = response.json()
            outcome.accepted += data["accepted"]
            outcome.duplicates += data["duplicates"]
            outcome.rejected += data["rejected"]
            for item in data.get("rejected_items", []):
                if not item["field"] or not item["reason"]:
                    outcome.unnamed_rejections += 1
                if item["index"] in batch.valid:
                    outcome.valid_rejected += 1

        await asyncio.gather(*(post(batch) for batch in requests))
    outcome.seconds = time.perf_counter() - started
    return outcome


def stored_counts(db: Path) -> tuple[int, int]:
    """``(alerts, dead letters)`` in the SQLite store."""
    with sqlite3.connect(db) as conn:
        alerts = conn.execute("SELECT count(*) FROM alerts").fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    return int(alerts), int(dead)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> int:
    """Run the 10,000-item fuzz against a ``stanch serve --no-run-flows`` subprocess."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--malformed", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args(argv)
    requests = list(batches(args.seed, args.malformed))
    with tempfile.TemporaryDirectory() as work:
        home = Path(work) / "stanch"
        port = _free_port()
        env = {
            **os.environ,
            "STANCH_HOME": str(home),
            "STANCH_SOURCES": json.dumps(sources_config()),
        }
        command = [
            sys.executable, "-m", "stanch", "serve", "--port", str(port), "--no-run-flows",
            "--log-level", "warning",
        ]  # fmt: skip
        log = Path(work) / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - fixed argv
                command, cwd=ROOT, env=env, stdout=out, stderr=out
            )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    print(log.read_text(errors="replace")[-3000:])
                    return 1
                time.sleep(0.2)
            outcome = asyncio.run(post_all(base, requests))
            alerts, dead = stored_counts(home / "stanch.db")
        finally:
            process.terminate()
            process.wait(timeout=30)
    fives = sum(n for s, n in outcome.statuses.items() if s >= 500)
    print(
        f"requests {outcome.requests}, malformed items {outcome.malformed}, valid {outcome.valid}"
    )
    print(f"statuses {dict(sorted(outcome.statuses.items()))}, connection errors {outcome.resets}")
    print(
        f"accepted {outcome.accepted}, duplicates {outcome.duplicates}, rejected "
        f"{outcome.rejected}, bodies refused {outcome.bodies_refused}"
    )
    print(f"stored alerts {alerts}, dead letters {dead}, in {outcome.seconds:.1f} s")
    problems = {
        "5xx answers": fives,
        "connection errors": outcome.resets,
        "rejections without field or reason": outcome.unnamed_rejections,
        "valid alerts rejected": outcome.valid_rejected,
        "accepted but not stored": outcome.accepted - alerts,
        "rejected but not dead-lettered": outcome.rejected + outcome.bodies_refused - dead,
    }
    bad = {k: v for k, v in problems.items() if v}
    print("OK" if not bad else f"FAILED: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
