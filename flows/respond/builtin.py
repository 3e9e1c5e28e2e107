"""What to do about an incident: score it, then plan containment and remediation.

Pure functions of the incident and what investigation found, so they are tested without
Prefect or vendors. The playbook engine will produce the same :class:`ActionPlan` objects
from YAML; this module is the built-in response the lifecycle uses until then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from flows.detect import fleet_prevalence
from flows.models import ActionPlan, HuntSummary, Incident, Investigation, Stage
from flows.respond.hunting import fleet_hosts
from integrations.capabilities import Capability, Host, UserAccount
from integrations.ocsf import SeverityId

BLOCK_TTL_SECONDS = 24 * 3600

_SEVERITY_SCORE = {
    SeverityId.FATAL: 95,
    SeverityId.CRITICAL: 90,
    SeverityId.HIGH: 75,
    SeverityId.MEDIUM: 50,
    SeverityId.LOW: 25,
    SeverityId.INFORMATIONAL: 10,
}


def assess(
    incident: Incident,
    hosts: Mapping[str, Host | None],
    users: Mapping[str, UserAccount | None],
    hunts: Sequence[HuntSummary] = (),
) -> Investigation:
    """Score the incident from its severity, how many kinds of entity it spans, and how far
    its indicators reached in the fleet (``hunts``; the triage score's fleet prevalence)."""
    score = _SEVERITY_SCORE.get(incident.severity, 30)
    reasons = [f"highest alert severity {incident.severity.name.lower()} (+{score})"]
    found_hosts = {name: h for name, h in hosts.items() if h is not None}
    found_users = {login: u for login, u in users.items() if u is not None}
    if found_hosts and found_users:
        score += 10
        reasons.append("endpoint and identity activity correlate (+10)")
    if len({a.vendor for a in incident.alerts}) > 1:
        score += 5
        reasons.append("independent products agree (+5)")
    for missing in sorted(set(hosts) - set(found_hosts)):
        reasons.append(f"host {missing} is unknown to the EDR")
    for missing in sorted(set(users) - set(found_users)):
        reasons.append(f"user {missing} is unknown to the identity provider")
    other = fleet_hosts(hunts)
    if other:
        points = fleet_prevalence(other)
        score += points
        reasons.append(
            f"its indicators were seen on {other} other host(s) in the fleet (+{points})"
        )
    score = min(score, 100)
    verdict = "true_positive" if score >= 70 else "suspicious" if score >= 40 else "benign"
    return Investigation(
        hosts={n: h.model_dump(mode="json") for n, h in found_hosts.items()},
        users={n: u.model_dump(mode="json") for n, u in found_users.items()},
        hunts=list(hunts),
        verdict=verdict,
        risk_score=score,
        reasons=reasons,
    )


def _plan(
    incident: Incident,
    capability: Capability,
    verb: str,
    target: str,
    label: str,
    stage: Stage,
    **parameters: str | int | None,
) -> ActionPlan:
    return ActionPlan(
        tenant=incident.tenant,
        incident_id=incident.id,
        capability=capability,
        verb=verb,
        target=target,
        target_label=label,
        parameters=dict(parameters),
        stage=stage,
    )


def containment_plans(incident: Incident, found: Investigation) -> list[ActionPlan]:
    """Isolate the hosts, suspend the users and end their sessions, block the internet IPs.

    Nothing is planned for a benign verdict: containment has a cost for the customer.
    """
    if found.verdict == "benign":
        return []
    reason = f"stanch {incident.id}"
    plans: list[ActionPlan] = []
    for hostname, host in found.hosts.items():
        plans.append(
            _plan(
                incident,
                Capability.EDR,
                "contain_host",
                host["id"],
                hostname,
                Stage.CONTAIN,
                reason=reason,
            )
        )
    for login, user in found.users.items():
        plans.append(
            _plan(
                incident,
                Capability.IDENTITY,
                "suspend_user",
                user["id"],
                login,
                Stage.CONTAIN,
                reason=reason,
            )
        )
        plans.append(
            _plan(
                incident, Capability.IDENTITY, "revoke_sessions", user["id"], login, Stage.CONTAIN
            )
        )
    for ip in incident.external_ips:
        plans.append(
            _plan(
                incident,
                Capability.FIREWALL,
                "block_ip",
                ip,
                ip,
                Stage.CONTAIN,
                ttl_seconds=BLOCK_TTL_SECONDS,
                reason=reason,
            )
        )
    return plans


def remediation_plans(incident: Incident, found: Investigation) -> list[ActionPlan]:
    """Block the malicious file hashes fleet-wide.

    The users' passwords are not expired here: containment suspended them, and Okta
    refuses to expire a suspended user's password (403 E0000038; its user status limits
    the lifecycle operations allowed). ``stanch undo`` expires it right after giving the
    account back, the first moment it can be.
    """
    if found.verdict == "benign":
        return []
    reason = f"stanch {incident.id}"
    return [
        _plan(
            incident,
            Capability.EDR,
            "block_hash",
            sha256,
            sha256[:16],
            Stage.REMEDIATE,
            reason=reason,
        )
        for sha256 in incident.sha256s
    ]
