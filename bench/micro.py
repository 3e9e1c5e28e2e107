"""The small per-incident costs, each measured the old way and the new way in one process.

``python -m bench.micro [--repeat N] [--ledger 1000,6000]`` times, as medians of
``--repeat`` rounds (milliseconds):

* ``tls``: building one vendor ``httpx.AsyncClient`` with httpx's own certificate
  context (the CA bundle loaded for each client) and with the shared one (``tls_verify``);
* ``playbooks``: loading the bundled playbook library with the per-file cache emptied and
  with it warm;
* ``yaml``: composing every bundled playbook with PyYAML's pure-Python ``SafeLoader`` and
  with ``LineLoader`` (libyaml's ``CSafeLoader``);
* ``report``: rendering one report's Markdown and HTML with a new Jinja environment and
  with the process's one;
* ``ledger``: for each ledger size, the whole-chain walk a report used to make, and the
  check from the last verified head after one incident's worth (7) of new entries.

It prints one JSON object and a summary line. Nothing here talks to Prefect.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common

ROOT = Path(__file__).resolve().parents[1]


def _ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


async def _ams(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def tls(repeat: int) -> dict[str, float]:
    """One vendor client, with httpx's own TLS context and with the shared one."""
    import httpx

    from integrations.http import tls_verify

    def build(**kwargs: Any) -> Callable[[], None]:
        return lambda: httpx.AsyncClient(base_url="https://api.example.invalid", **kwargs)

    tls_verify()  # built once, as the first client of a process does
    return {
        "per_client_context_ms": _ms(build(), repeat),
        "shared_context_ms": _ms(build(verify=tls_verify()), repeat),
    }


def playbooks(repeat: int) -> dict[str, float]:
    """The bundled library, parsed afresh and from the cache."""
    from flows.playbook import forget_loaded, load_playbooks

    library = ROOT / "playbooks"

    def cold() -> None:
        forget_loaded()
        load_playbooks(library)

    load_playbooks(library)
    return {
        "files": len(list(library.glob("*.yaml"))),
        "parsed_ms": _ms(cold, repeat),
        "cached_ms": _ms(lambda: load_playbooks(library), repeat),
    }


def yaml_compose(repeat: int) -> dict[str, float]:
    """Every bundled playbook composed, by the pure-Python and the libyaml parser."""
    import yaml

    from flows.yaml_lines import LineLoader

    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "playbooks").glob("*.yaml"))]

    def compose(loader: type[Any]) -> Callable[[], None]:
        def run() -> None:
            for text in texts:
                parser = loader(text)
                try:
                    parser.construct_document(parser.get_single_node())
                finally:
                    parser.dispose()

        return run

    return {
        "safe_loader_ms": _ms(compose(yaml.SafeLoader), repeat),
        "line_loader_ms": _ms(compose(LineLoader), repeat),
    }


def report(repeat: int) -> dict[str, float]:
    """One report's Markdown and HTML, with a new Jinja environment and the shared one."""
    from datetime import UTC, datetime

    from flows.models import Incident, IncidentOutcome, Investigation
    from flows.record import forget_report_templates, render_html, render_markdown
    from stanch.demo import scenario_alerts

    now = datetime.now(UTC)
    outcome = IncidentOutcome(
        incident=Incident(
            id=f"INC-{now:%Y%m%d}-0001",
            tenant="demo",
            title="ransomware on WS-0042",
            alerts=scenario_alerts(now, edr="crowdstrike", identity="okta"),
        ),
        flow_run_id=None,
        investigation=Investigation(verdict="true_positive", risk_score=90, reasons=["bench"]),
        stages=[],
        actions=[],
        clocks={"detect": 1.0, "acknowledge": None, "contain": None, "resolve": None},
    )

    def fresh() -> None:
        forget_report_templates()
        render_markdown(outcome)
        render_html(outcome)

    def shared() -> None:
        render_markdown(outcome)
        render_html(outcome)

    shared()
    return {"new_environment_ms": _ms(fresh, repeat), "shared_environment_ms": _ms(shared, repeat)}


async def ledger(sizes: list[int], repeat: int) -> dict[str, dict[str, float]]:
    """Per ledger size: the whole walk, and the walk from the mark after 7 new entries."""
    from flows.models import ActionPlan, ActionResult, ActionStatus, Stage, Verdict
    from flows.record import Ledger, open_store
    from integrations.capabilities import Capability

    def entry(n: int) -> ActionResult:
        plan = ActionPlan(
            tenant="bench",
            incident_id=f"INC-20261203-{n // 7:04d}",
            capability=Capability.FIREWALL,
            verb="block_ip",
            target=f"45.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
            target_label=f"45.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
            parameters={"ttl_seconds": 3600, "reason": "benchmark"},
            stage=Stage.CONTAIN,
        )
        return ActionResult(
            plan=plan,
            plan_sha256=plan.sha256,
            verdict=Verdict.UNATTENDED,
            status=ActionStatus.EXECUTED,
            approved_by=["policy:unattended"],
            vendor="fortigate",
        )

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="stanch-bench-micro-") as tmp:
        async with open_store(f"sqlite+aiosqlite:///{Path(tmp) / 'ledger.db'}") as store:
            chain = Ledger(store)
            written = 0
            for size in sorted(sizes):
                while written < size:
                    await chain.append_action(entry(written))
                    written += 1
                await chain.verify_since_checkpoint()  # the mark at this size
                full = await _ams(chain.verify, repeat)
                since: list[float] = []
                for _ in range(repeat):
                    for _ in range(7):
                        await chain.append_action(entry(written))
                        written += 1
                    started = time.perf_counter()
                    checked = await chain.verify_since_checkpoint()
                    since.append((time.perf_counter() - started) * 1000)
                    assert checked.ok, checked.message
                out[str(size)] = {
                    "whole_chain_ms": full,
                    "since_last_check_ms": round(statistics.median(since), 2),
                }
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, print the JSON object and the summary line."""
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__)
    parser.add_argument("--repeat", type=int, default=20, help="rounds per measurement")
    parser.add_argument(
        "--ledger",
        type=lambda text: [int(n) for n in text.split(",") if n.strip()],
        default=[1000, 6000],
        help="ledger sizes, comma-separated",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or not args.ledger or min(args.ledger) < 1:
        parser.error("need --repeat >= 1 and positive ledger sizes")
    figures: dict[str, Any] = {
        "benchmark": "micro",
        "repeat": args.repeat,
        "tls": tls(args.repeat),
        "playbooks": playbooks(args.repeat),
        "yaml": yaml_compose(args.repeat),
        "report": report(args.repeat),
        "ledger": asyncio.run(ledger(args.ledger, max(3, args.repeat // 4))),
    }
    figures.update(common.machine())
    largest = figures["ledger"][str(max(args.ledger))]
    common.emit(
        figures,
        f"OK: TLS client {figures['tls']['per_client_context_ms']} -> "
        f"{figures['tls']['shared_context_ms']} ms; playbooks "
        f"{figures['playbooks']['parsed_ms']} -> {figures['playbooks']['cached_ms']} ms; YAML "
        f"{figures['yaml']['safe_loader_ms']} -> {figures['yaml']['line_loader_ms']} ms; report "
        f"{figures['report']['new_environment_ms']} -> "
        f"{figures['report']['shared_environment_ms']} ms; ledger of {max(args.ledger)} "
        f"{largest['whole_chain_ms']} -> {largest['since_last_check_ms']} ms",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
