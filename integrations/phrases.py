"""How a person reads an action and a vendor: ``Isolate host WS-0042 (CrowdStrike)``.

One vocabulary for the approval message, the CLI and the report, so the analyst who
approves "Isolate host" finds the same words in the customer's report.
"""

from __future__ import annotations

VENDOR_NAMES: dict[str, str] = {
    "crowdstrike": "CrowdStrike",
    "defender": "Microsoft Defender",
    "sentinelone": "SentinelOne",
    "okta": "Okta",
    "entra": "Microsoft Entra ID",
    "panos": "PAN-OS",
    "fortigate": "FortiGate",
    "virustotal": "VirusTotal",
    "abuseipdb": "AbuseIPDB",
    "slack": "Slack",
}

ACTION_PHRASES: dict[str, str] = {
    "edr.contain_host": "Isolate host",
    "edr.release_host": "Release host",
    "edr.block_hash": "Block file hash",
    "edr.unblock_hash": "Unblock file hash",
    "identity.suspend_user": "Suspend user",
    "identity.unsuspend_user": "Unsuspend user",
    "identity.revoke_sessions": "Revoke sessions of",
    "identity.expire_password": "Expire password of",
    "identity.reset_factors": "Reset MFA factors of",
    "firewall.block_ip": "Block IP",
    "firewall.unblock_ip": "Unblock IP",
}


def vendor_name(vendor: str) -> str:
    """The product's own spelling of a vendor key; an unknown key is shown as given."""
    return VENDOR_NAMES.get(vendor, vendor)


def action_phrase(action: str) -> str:
    """``edr.contain_host`` → ``Isolate host``; an unknown action is shown as given."""
    return ACTION_PHRASES.get(action, action)


def describe_action(action: str, label: str, vendor: str = "") -> str:
    """One line a person reads: ``Isolate host WS-0042 (CrowdStrike)``.

    The label is returned as given: callers that render markup escape it themselves.
    """
    where = f" ({vendor_name(vendor)})" if vendor else ""
    return f"{action_phrase(action)} {label}{where}"


def duration_words(seconds: float | None) -> str:
    """``42 s``, ``4 m 12 s``, ``2 h 05 m``, ``3 d 4 h``, ``1 d``; an em dash for no value."""
    if seconds is None:
        return "—"
    sign = "-" if seconds < 0 else ""
    total = round(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days} d" + (f" {hours} h" if hours else "")
    if hours:
        return f"{sign}{hours} h" + (f" {minutes:02d} m" if minutes else "")
    if minutes:
        return f"{sign}{minutes} m {secs:02d} s"
    return f"{sign}{secs} s"
