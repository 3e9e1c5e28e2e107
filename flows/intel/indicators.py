"""Which of an incident's entities are worth asking a reputation service about.

File hashes (MD5, SHA-1, SHA-256), internet addresses and the domains the alerts saw
traffic to. Internal addresses and host names are never sent: they say nothing to a
reputation service and would tell it about the customer's network.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flows.models import Incident
from integrations.capabilities import IndicatorKind, indicator_kind
from integrations.ocsf import ObservableType

MAX_INDICATORS = 20
"""At most this many indicators are looked up per incident: a quota is a budget."""

_HASH_ALGORITHMS = {1: IndicatorKind.MD5, 2: IndicatorKind.SHA1, 3: IndicatorKind.SHA256}


def _file_hashes(incident: Incident) -> list[str]:
    found: list[str] = list(incident.entities(ObservableType.HASH))
    for alert in incident.alerts:
        for evidence in alert.evidences:
            files = [evidence.file, evidence.process.file if evidence.process else None]
            for file in files:
                for digest in file.hashes if file is not None else []:
                    if digest.algorithm_id in _HASH_ALGORITHMS:
                        found.append(digest.value)
    return found


def _domains(incident: Incident) -> list[str]:
    found: list[str] = []
    for url in incident.entities(ObservableType.URL_STRING):
        host = urlsplit(url if "//" in url else f"//{url}").hostname
        if host:
            found.append(host)
    for alert in incident.alerts:
        for evidence in alert.evidences:
            endpoint = evidence.dst_endpoint
            if endpoint is not None:
                found.extend(n for n in (endpoint.domain, endpoint.hostname) if n)
    return found


def indicators_of(incident: Incident) -> list[tuple[IndicatorKind, str]]:
    """The incident's hashes, internet addresses and domains, canonical, first-seen order."""
    seen: dict[str, IndicatorKind] = {}
    sources = (
        (_file_hashes(incident), lambda k: k.is_hash),
        (incident.external_ips, lambda k: k.is_ip),  # public addresses only
        (_domains(incident), lambda k: k is IndicatorKind.DOMAIN),
    )
    for values, wanted in sources:
        for raw in values:
            parsed = indicator_kind(raw)
            if parsed is not None and wanted(parsed[0]):
                seen.setdefault(parsed[1], parsed[0])
    return [(kind, value) for value, kind in seen.items()][:MAX_INDICATORS]
