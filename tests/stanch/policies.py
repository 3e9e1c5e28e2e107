"""Policy directories the stanch tests point ``STANCH_POLICIES_DIR`` at."""

from __future__ import annotations

from pathlib import Path

UNATTENDED_POLICIES = Path(__file__).parent / "unattended_policies"
"""Tenant ``demo`` runs every containment and remediation verb unattended."""
