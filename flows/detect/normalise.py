"""Vendor alert payloads to OCSF Detection Findings, by source format."""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable
from typing import Any

from flows.detect.alerts import parse_finding
from flows.errors import AlertRejected, ConfigurationError
from integrations.ocsf import DetectionFinding, NormalizationError


class UnknownSource(ConfigurationError):
    """``normalise`` was asked for a source format it has no normaliser for."""


# Imported on first use: the store imports this module, and a vendor package that fails
# to import must not take the store (or the other sources) down with it.
_VENDOR_NORMALISERS: dict[str, tuple[str, str]] = {
    "crowdstrike": ("integrations.crowdstrike.alerts", "normalize_alert"),
    "defender": ("integrations.defender.alerts", "normalize_alert"),
    "entra": ("integrations.entra.alerts", "normalize_detection"),
    "okta": ("integrations.okta.alerts", "normalize_event"),
    "sentinelone": ("integrations.sentinelone.alerts", "normalize_threat"),
}


@functools.cache
def _normaliser(source: str) -> Callable[[dict[str, Any]], DetectionFinding]:
    if source not in _VENDOR_NORMALISERS:
        raise UnknownSource(f"no alert normaliser for source {source!r}")
    module, name = _VENDOR_NORMALISERS[source]
    try:
        function: Callable[[dict[str, Any]], DetectionFinding] = getattr(
            importlib.import_module(module), name
        )
    except ImportError as exc:
        raise ConfigurationError(f"the {source} normaliser cannot be imported: {exc}") from exc
    return function


SOURCE_FORMATS: frozenset[str] = frozenset({"ocsf", *_VENDOR_NORMALISERS})
"""What :func:`normalise` accepts: ``ocsf`` or the name of a vendor with a normaliser."""


def normalise(source: str, payload: Any) -> DetectionFinding:
    """One payload of ``source`` as an OCSF Detection Finding.

    Args:
        source: ``ocsf`` for payloads that already are findings, else a vendor name from
            :data:`SOURCE_FORMATS`.
        payload: the decoded JSON of one alert.

    Raises:
        AlertRejected: the payload is not a valid alert; ``field`` names the failing field.
        UnknownSource: ``source`` is not in :data:`SOURCE_FORMATS`.
        ConfigurationError: the vendor's normaliser cannot be imported.
    """
    if source == "ocsf":
        return parse_finding(payload, source=source)
    normaliser = _normaliser(source)
    try:
        return normaliser(payload)
    except NormalizationError as exc:
        raise AlertRejected(exc.field, exc.reason, source=source) from exc
    except (ConfigurationError, AlertRejected):
        raise
    except Exception as exc:
        # A normaliser tripping over a shape it never expected (an IndexError, an
        # OverflowError of a date, a RecursionError) is still a bad payload: dead-letter
        # it rather than fail the whole batch it came in.
        reason = f"{type(exc).__name__}: {exc}"[:500]
        raise AlertRejected("(unknown)", reason, source=source) from exc


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: equal data gives equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
