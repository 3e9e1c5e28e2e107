"""Threat intelligence: know what an indicator is before anyone approves acting on it.

The investigate stage takes every file hash, internet address and domain an incident's
alerts name (:func:`indicators_of`), asks each reputation service configured in
``STANCH_INTEL`` about them, cached per tenant, indicator and vendor in the store
(:func:`look_up`), and counts the worst verdict in the incident's score
(:func:`with_intel`). A spent quota or a failed lookup is an ``unknown`` verdict with a
note, never a failed incident. :func:`intel_lines` are the plain-text lines the report
and the approval message show, escaped by each renderer like alert text.
"""

from __future__ import annotations

from flows.intel.indicators import MAX_INDICATORS, indicators_of
from flows.intel.lookup import Finding, look_up
from flows.intel.verdicts import intel_lines, with_intel

__all__ = [
    "MAX_INDICATORS",
    "Finding",
    "indicators_of",
    "intel_lines",
    "look_up",
    "with_intel",
]
