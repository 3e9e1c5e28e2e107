"""The vocabulary shared by export and import: ids, the stanch extension, stages and OpenC2.

Everything here is a table or a pure function, so that export and import cannot drift
apart: both read the same :data:`OPENC2` rows and the same variable names.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from flows.models import Stage

NAMESPACE = uuid.UUID("5b0b4c8e-7a53-5d6e-9c1e-2f0d6a3c9b71")
"""The fixed UUIDv5 namespace of every id stanch writes into a CACAO document."""

EXTENSION_ID = f"extension-definition--{uuid.uuid5(NAMESPACE, 'stanch-playbook-extension')}"
"""The id of stanch's extension; its data sits under this key in ``*_extensions``."""

EXTENSION_VERSION = "1.0.0"

STANCH_IDENTITY = f"identity--{uuid.uuid5(NAMESPACE, 'stanch')}"
"""Who created the extension definition: the stanch project."""

EXTENSION_DEFINITION: dict[str, Any] = {
    "type": "extension-definition",
    "name": "stanch playbook",
    "description": (
        "What a stanch playbook says that CACAO has no word for, so that an export and its "
        "re-import lose nothing: the playbook's id, version, owner, ATT&CK techniques and "
        "trigger, and for each step its stanch id, lifecycle stage, position, action, "
        "arguments, for_each, when, depends_on, approval and confirm. stanch executes what "
        "this extension says and refuses a document whose workflow no longer matches it."
    ),
    "created_by": STANCH_IDENTITY,
    "schema": (
        "stanch playbook extension 1.0.0, defined in stanch's playbooks/README.md (section "
        "'CACAO 2.0') and the JSON schema flows/playbook/cacao/stanch-extension.json "
        "shipped with stanch. Playbook properties: playbook_id, version, owner, attack, "
        "trigger. Step properties: step_id, stage, position, and the stanch step fields "
        "as written (action, hunt, notify, manual, message, args, label, for_each, when, "
        "depends_on, approval, confirm)."
    ),
    "version": EXTENSION_VERSION,
}

STEP_PREFIXES = (
    "start",
    "end",
    "action",
    "playbook-action",
    "parallel",
    "if-condition",
    "while-condition",
    "switch-condition",
)
"""CACAO workflow step types; a workflow key is ``<type>--<uuid>``."""

LINKS = ("on_completion", "on_success", "on_failure", "on_true", "on_false")
"""Step properties that name one next step."""

PLAYBOOK_TYPES: dict[Stage, str] = {
    Stage.INVESTIGATE: "investigation",
    Stage.CONTAIN: "mitigation",
    Stage.REMEDIATE: "remediation",
    Stage.REPORT: "notification",
}
"""``playbook_types`` (playbook-type-ov) for the stages a playbook has steps in."""

ACTIVITIES: dict[str, str] = {
    "edr.find_host": "analyze-collected-data",
    "edr.get_host": "analyze-collected-data",
    "identity.find_user": "analyze-collected-data",
    "identity.get_user": "analyze-collected-data",
    "firewall.list_blocked": "analyze-collected-data",
    "edr.contain_host": "disconnect-system",
    "identity.suspend_user": "restrict-access",
    "identity.revoke_sessions": "restrict-access",
    "firewall.block_ip": "restrict-access",
    "edr.block_hash": "eliminate-risk",
    "identity.expire_password": "eliminate-risk",
    "identity.reset_factors": "eliminate-risk",
    "edr.release_host": "restore-capabilities",
    "identity.unsuspend_user": "restore-capabilities",
    "edr.unblock_hash": "restore-capabilities",
    "firewall.unblock_ip": "restore-capabilities",
    "hunt": "match-indicator",
    "notify": "deliver-content",
}
"""``playbook_activity`` (playbook-activity-type-ov) of each stanch action or step kind."""

CAPABILITY_CATEGORY = {"edr": "endpoint", "identity": "aaa", "firewall": "firewall"}
"""The security-category of the agent that answers each capability."""

OPENC2_START_LINE = "POST /.well-known/openc2 HTTP/1.1"
OPENC2_HEADERS = {"Content-Type": ["application/openc2-cmd+json;version=1.0"]}
"""How an ``openc2-http`` command is sent (OpenC2 over HTTPS, version 1.0)."""


@dataclass(frozen=True)
class OpenC2Verb:
    """One stanch action that OpenC2 has words for.

    Attributes:
        action: the stanch action (``edr.contain_host``).
        openc2: the OpenC2 action (``contain``).
        target: the OpenC2 target type (``device``).
        argument: the stanch argument that names the target (``host_id``).
    """

    action: str
    openc2: str
    target: str
    argument: str


OPENC2: tuple[OpenC2Verb, ...] = (
    # Endpoint Response actuator profile: contain device isolates it, allow device undoes it.
    OpenC2Verb("edr.contain_host", "contain", "device", "host_id"),
    OpenC2Verb("edr.release_host", "allow", "device", "host_id"),
    # Language specification / packet filtering: deny and allow an address, for a duration.
    OpenC2Verb("firewall.block_ip", "deny", "ipv4_net", "ip"),
    OpenC2Verb("firewall.unblock_ip", "allow", "ipv4_net", "ip"),
    # Endpoint Response: deny file prevents its execution; allow file lifts that.
    OpenC2Verb("edr.block_hash", "deny", "file", "sha256"),
    OpenC2Verb("edr.unblock_hash", "allow", "file", "sha256"),
)
"""The OpenC2 commands stanch writes and executes. Identity verbs have no OpenC2 word."""

OPENC2_BY_ACTION = {v.action: v for v in OPENC2}
OPENC2_BY_COMMAND = {(v.openc2, v.target): v for v in OPENC2}

INCIDENT_VARIABLES: dict[str, tuple[str, bool]] = {
    "__incident_id__": ("incident.id", False),
    "__incident_title__": ("incident.title", False),
    "__incident_severity__": ("incident.severity", False),
    "__tenant__": ("tenant", False),
    "__incident_hostnames__": ("incident.hostnames", True),
    "__incident_users__": ("incident.users", True),
    "__incident_ips__": ("incident.ips", True),
    "__incident_external_ips__": ("incident.external_ips", True),
    "__incident_sha256s__": ("incident.sha256s", True),
    "__incident_urls__": ("incident.urls", True),
    "__incident_email_addresses__": ("incident.email_addresses", True),
}
"""The CACAO variables stanch binds to the incident: name -> (template path, is a list).

A foreign playbook's step is executable only when its targets are literals or these
variables; any other variable has no value stanch could give it.
"""

_SIMPLE = re.compile(r"^\{\{\s*([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)\s*\}\}$")
_VARIABLE_REF = re.compile(r"^(__[a-zA-Z][a-zA-Z0-9_-]*__):value$")


def step_uuid(playbook_id: str, version: int, path: str) -> str:
    """The stable UUIDv5 of one object of an exported playbook."""
    return str(uuid.uuid5(NAMESPACE, f"{playbook_id}/{version}/{path}"))


def playbook_cacao_id(playbook_id: str) -> str:
    """The CACAO id of a stanch playbook: the same for every version, as CACAO requires."""
    return f"playbook--{uuid.uuid5(NAMESPACE, f'playbook/{playbook_id}')}"


def identity_of(owner: str) -> str:
    """The ``identity--…`` id standing for a playbook's owner."""
    if re.fullmatch(r"identity--[0-9a-f-]{36}", owner):
        return owner  # imported from CACAO: the owner is the creator's identity itself
    return f"identity--{uuid.uuid5(NAMESPACE, f'owner/{owner}')}"


def variable_for(template: str) -> str | None:
    """``__item_id__`` for ``{{ item.id }}``: a CACAO variable for a simple template path."""
    match = _SIMPLE.match(template)
    return f"__{match[1].replace('.', '_')}__" if match else None


def variable_reference(value: Any) -> str | None:
    """``__name__`` when ``value`` is a CACAO variable reference ``__name__:value``."""
    match = _VARIABLE_REF.match(value) if isinstance(value, str) else None
    return match[1] if match else None


def cacao_timestamp(value: date | datetime) -> str:
    """A CACAO timestamp: UTC, to the millisecond, with ``Z``."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


def slug(text: str, *, separator: str, limit: int = 63) -> str:
    """Lowercase letters, digits and ``separator``; starts with a letter (``""`` if none)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    joined = separator.join(words)[:limit].strip(separator)
    return re.sub(r"^[^a-z]+", "", joined)
