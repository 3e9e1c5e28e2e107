"""What every ``stanch`` command shares: exit codes, JSON output, a progress line, who is
at the terminal, and the environment that keeps Prefect from calling out.

Exit codes follow ``gh`` and ``prefect``: 0 the command did what it said, 1 the operation
failed, 2 the command was used wrongly (a usage error, an unknown id).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

OK = 0
FAILED = 1
USAGE = 2

TELEMETRY_OFF = {
    # The server's usage telemetry job (it also fails noisily without internet access).
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # The Prefect SDK's client-side analytics honour the DO_NOT_TRACK convention.
    "DO_NOT_TRACK": "1",
    # Run telemetry that Prefect sends to Prefect Cloud.
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
}
"""A security tool on a customer's network should not try to call out: off unless the
operator sets these variables themselves."""


def telemetry_off(environ: MutableMapping[str, str] = os.environ) -> None:
    """Turn Prefect's telemetry off in ``environ``, keeping any value already set there."""
    for name, value in TELEMETRY_OFF.items():
        environ.setdefault(name, value)


def print_json(document: Any) -> None:
    """One JSON document on stdout, for scripts (``--json``)."""
    print(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def operator() -> str:
    """Who is at this terminal, for the record of a CLI decision."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


@contextlib.contextmanager
def progress(message: str, *, enabled: bool = True) -> Iterator[None]:
    """A one-line spinner with the elapsed seconds on stderr while the block runs.

    On a terminal the line is redrawn in place; elsewhere (a pipe, CI) one line is printed
    at the start, so a log still shows what the command was doing. ``enabled=False`` (for
    ``--json``) prints nothing.
    """
    if not enabled:
        yield
        return
    stream = sys.stderr
    if not stream.isatty():
        print(f"{message} …", file=stream, flush=True)
        yield
        return
    stop = threading.Event()
    started = time.monotonic()

    def spin() -> None:
        frames = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
        i = 0
        while not stop.wait(0.1):
            elapsed = time.monotonic() - started
            stream.write(f"\r{frames[i % len(frames)]} {message} ({elapsed:.0f} s)")
            stream.flush()
            i += 1

    stream.write(f"⠋ {message} (0 s)")
    stream.flush()
    spinner = threading.Thread(target=spin, name="stanch-progress", daemon=True)
    spinner.start()
    try:
        yield
    finally:
        stop.set()
        spinner.join()
        stream.write("\r\033[K")
        stream.flush()
