"""stanch's own settings, read from ``STANCH_<FIELD>`` environment variables.

Vendor credentials live in each vendor's settings (``STANCH_<VENDOR>_<FIELD>``); this
module holds what is not per vendor: where state lives, which vendor answers each
capability, and the key that signs approval outcomes.
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

import flows

HOME_MARKER = ".stanch"
"""The directory that holds a project's stanch state; finding one marks the project."""


def _names_stanch(pyproject: Path) -> bool:
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return False
    return any(line.replace(" ", "") == 'name="stanch"' for line in text.splitlines())


def user_data_dir(environ: dict[str, str] | None = None, platform: str = sys.platform) -> Path:
    """The platform's per-user data directory for stanch (XDG on Linux)."""
    env = os.environ if environ is None else environ
    if platform == "win32":
        base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "stanch"
    if platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "stanch"
    return Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "stanch"


def default_home(start: Path | None = None) -> Path:
    """Where stanch keeps its state when ``STANCH_HOME`` is not set.

    Walking up from ``start`` (the current directory): the first directory holding a
    ``.stanch`` directory, or stanch's own ``pyproject.toml`` (a checkout), keeps it in
    its ``.stanch``; anywhere else it is the platform's user data directory. So every
    terminal of a project, whatever its working directory, finds the same approvals.
    """
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / HOME_MARKER).is_dir() or _names_stanch(directory / "pyproject.toml"):
            return directory / HOME_MARKER
    return user_data_dir()


_SLACK_ID = r"^[A-Z0-9]{2,32}$"
_SLACK_GROUP = r"^S[A-Z0-9]{2,31}$"


class TenantConfig(BaseModel):
    """One tenant's own configuration, an entry of ``STANCH_TENANTS``.

    Attributes:
        edr, identity, firewall: the vendor answering each capability for this tenant;
            unset: the process-wide choice.
        credentials: ``own`` (the default): in live mode the tenant's vendors are called
            only with ``STANCH_<TENANT>_<VENDOR>_<FIELD>`` settings, and a missing one stops
            the run before any vendor call; ``provider``: the provider's own
            ``STANCH_<VENDOR>_<FIELD>`` settings, for an in-house SOC that has no other
            customer.
        slack_channel: the channel this tenant's approval requests are posted in.
        slack_approver_ids: Slack user ids that may decide this tenant's requests when its
            policy names none.
        slack_approver_group: a Slack user group that may decide them when its policy
            names none.
        slack_escalation_group: the group a waiting request of this tenant escalates to.
        intel: the threat-intelligence vendors for this tenant, comma-separated (``""``:
            none); unset: the process-wide ``intel``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    edr: str | None = None
    identity: str | None = None
    firewall: str | None = None
    intel: str | None = None
    credentials: Literal["own", "provider"] = "own"
    slack_channel: str | None = Field(default=None, pattern=_SLACK_ID)
    slack_approver_ids: tuple[str, ...] = ()
    slack_approver_group: str | None = Field(default=None, pattern=_SLACK_GROUP)
    slack_escalation_group: str | None = Field(default=None, pattern=_SLACK_GROUP)


class StanchSettings(BaseSettings):
    """Process-wide settings.

    Attributes:
        home: where the embedded default keeps its state (Prefect DB, stanch DB, keys,
            reports); unset, the project's ``.stanch`` (see :func:`default_home`), else
            the user data directory; a relative path is taken from the current directory.
        mode: ``lab`` wires every capability to an in-process simulator; ``live`` reads
            each vendor's ``STANCH_<VENDOR>_*`` settings and calls its API.
        edr, identity, firewall: which vendor answers each capability.
        intel: the threat-intelligence vendors every indicator is looked up in,
            comma-separated (``virustotal,abuseipdb``); ``""``: none. Unset: both in lab
            mode (their simulators), none in live mode (each needs an API key).
        intel_cache_seconds: how long a lookup answer is reused for the same indicator
            and vendor before it is asked again (a day by default), so an alert storm does
            not spend the daily quota.
        tenant: the tenant an alert belongs to when its payload does not say.
        approval_secret: HMAC key for approval outcomes; generated into ``home`` when unset.
        approval_timeout_seconds: a cap on how long a request waits for a decision; the
            tenant's policy sets the wait (``approval.timeout``), this only shortens it
            (drills, tests).
        approval_poll_seconds: how often a paused run asks the Prefect server whether it
            was resumed (0.2 to 10 s): a decision is noticed within about this long.
        approval_suspend_after_seconds: a run started from a deployment whose approval
            may wait at least this long is suspended (its process exits; a worker resumes
            it) instead of paused in place; ``0`` suspends every deployed run's wait.
        reports_dir: where Markdown and HTML reports are written; ``<home>/reports`` when
            unset.
        database_url: the incident store; SQLite under ``home`` by default.
        policies_dir: the rules of engagement (``<tenant>.yaml``, ``default.yaml``); by
            default ``./policies`` or the bundled set.
        playbooks_dir: the playbooks (``<id>.yaml``); by default ``./playbooks`` or the
            bundled library. An incident no playbook's trigger fits gets the built-in
            response.
        tenants: each tenant's :class:`TenantConfig` (vendors, whose credentials, Slack
            channel and approvers), e.g. ``STANCH_TENANTS='{"globex": {"edr": "defender"}}'``.
            In live mode a tenant's vendor credentials are ``STANCH_<TENANT>_<VENDOR>_<FIELD>``
            and nothing else, unless its entry says ``"credentials": "provider"``.
        approval_channel: where approval requests go: ``cli`` (``stanch approve``) or
            ``slack`` (a Block Kit message answered by the stanch service).
        slack_bot_token: the bot token (``xoxb-``) that posts and updates approval messages.
        slack_signing_secret: verifies HTTP interaction requests from Slack.
        slack_app_token: the app-level token (``xapp-``) for Socket Mode.
        slack_channel: the channel id approval requests are posted in.
        slack_team_id: the only workspace clicks are accepted from.
        slack_approver_ids: Slack user ids that may decide when policy names none.
        slack_approver_group: a Slack user group whose members may decide when policy
            names none.
        slack_escalation_group: a second user group that may decide once a request has
            waited ``slack_escalate_after_seconds``.
        slack_reminder_seconds: how often a still-pending request is reminded in its thread.
        slack_escalate_after_seconds: when a pending request is escalated.
        slack_overdue_channel: where the ``approval-overdue`` automation posts requests
            still undecided after its window (default: ``slack_channel``).
        slack_base_url: the Web API base URL; only changed to point at a fake.
        vendor_concurrency: vendors whose every call holds a slot of the Prefect global
            concurrency limit ``vendor:<name>`` (an API quota shared by all flow runs),
            e.g. ``STANCH_VENDOR_CONCURRENCY='["crowdstrike"]'``; the limit must be
            created first (``prefect gcl create vendor:crowdstrike --limit 5``). Empty by
            default: no slot is taken, so no call waits on the Prefect server for one.
    """

    model_config = SettingsConfigDict(env_prefix="STANCH_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    mode: Literal["lab", "live"] = "lab"
    edr: str = "crowdstrike"
    identity: str = "okta"
    firewall: str = "fortigate"
    intel: str | None = None
    intel_cache_seconds: int = Field(default=86_400, ge=0)
    tenant: str = Field(default="demo", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    approval_secret: SecretStr | None = None
    approval_timeout_seconds: int | None = Field(default=None, ge=5)
    approval_poll_seconds: float = Field(default=0.5, ge=0.2, le=10)
    approval_suspend_after_seconds: int | None = Field(default=600, ge=0)
    reports_dir: Path | None = None
    database_url: str | None = None
    policies_dir: Path | None = None
    playbooks_dir: Path | None = None
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    approval_channel: Literal["cli", "slack"] = "cli"
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_channel: str | None = Field(default=None, pattern=_SLACK_ID)
    slack_team_id: str | None = Field(default=None, pattern=_SLACK_ID)
    slack_approver_ids: list[str] = Field(default_factory=list)
    slack_approver_group: str | None = Field(default=None, pattern=_SLACK_GROUP)
    slack_escalation_group: str | None = Field(default=None, pattern=_SLACK_GROUP)
    slack_reminder_seconds: int = Field(default=600, ge=1)
    slack_escalate_after_seconds: int = Field(default=1200, ge=1)
    slack_overdue_channel: str | None = Field(default=None, pattern=r"^[A-Z0-9]{2,32}$")
    slack_base_url: str = "https://slack.com/api/"
    vendor_concurrency: list[str] = Field(default_factory=list)

    @property
    def reports(self) -> Path:
        """Where reports are written: ``reports_dir``, else ``<home>/reports``."""
        return self.reports_dir if self.reports_dir is not None else self.home / "reports"

    def tenant_config(self, tenant: str | None) -> TenantConfig:
        """``tenant``'s entry of ``tenants``; the defaults when it has none."""
        return self.tenants.get(tenant or "", TenantConfig())

    def vendor_for(self, capability: str, tenant: str | None = None) -> str:
        """The vendor answering ``capability`` (edr, identity, firewall) for ``tenant``."""
        override = getattr(self.tenant_config(tenant), capability)
        chosen: str = override or getattr(self, capability)
        return chosen

    def intel_vendors(self, tenant: str | None = None) -> list[str]:
        """The threat-intelligence vendors for ``tenant``, in the order given."""
        chosen = self.tenant_config(tenant).intel
        if chosen is None:
            chosen = self.intel
        if chosen is None:
            chosen = "virustotal,abuseipdb" if self.mode == "lab" else ""
        return list(dict.fromkeys(v.strip() for v in chosen.split(",") if v.strip()))

    def slack_channel_for(self, tenant: str | None) -> str | None:
        """The channel ``tenant``'s approval requests go to: its own, else ``slack_channel``."""
        return self.tenant_config(tenant).slack_channel or self.slack_channel

    @property
    def approval_timeout_cap(self) -> timedelta | None:
        """``approval_timeout_seconds`` as the cap on every policy's approval timeout."""
        seconds = self.approval_timeout_seconds
        return None if seconds is None else timedelta(seconds=seconds)

    @property
    def store_url(self) -> str:
        """SQLAlchemy async URL of the incident store."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.home / 'stanch.db').as_posix()}"

    def approval_key(self) -> bytes:
        """The approval HMAC key: the configured secret, else one kept in ``home``.

        The generated key file is created with mode 0600 so that only this account
        (the service and its CLI) can sign approval outcomes.
        """
        if self.approval_secret is not None:
            return self.approval_secret.get_secret_value().encode()
        path = self.home / "approval.key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it first; read theirs
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32))
        return path.read_text().strip().encode()


def load_settings() -> StanchSettings:
    """Settings from the environment."""
    return StanchSettings()


def content_directory(name: str, configured: Path | None, marker: str) -> Path:
    """Where SOC-authored content lives: the setting, else ``./<name>``, else the bundled set.

    The bundled set is the repository's ``<name>/`` (a checkout or an editable install)
    or the copy packaged into the wheel as ``flows/_<name>``. ``marker`` is a glob that
    a usable directory matches.
    """
    if configured is not None:
        return configured
    for candidate in (Path(name), *_bundled(name)):
        if any(candidate.glob(marker)):
            return candidate
    raise FileNotFoundError(f"no {name} directory: set STANCH_{name.upper()}_DIR")


def _bundled(name: str) -> tuple[Path, Path]:
    package = Path(flows.__file__).resolve().parent
    return package / f"_{name}", package.parent / name


def bundled_directory(name: str, marker: str) -> Path:
    """The set shipped with stanch (``policies`` or ``playbooks``), ignoring ``./<name>``.

    Raises:
        FileNotFoundError: this install carries no such set.
    """
    for candidate in _bundled(name):
        if any(candidate.glob(marker)):
            return candidate
    raise FileNotFoundError(f"this stanch install has no bundled {name}")


def policy_directory(configured: Path | None) -> Path:
    """Where the rules of engagement are (``default.yaml`` and ``<tenant>.yaml``)."""
    return content_directory("policies", configured, "default.yaml")


def playbook_directory(configured: Path | None) -> Path:
    """Where the playbooks are (``<id>.yaml``)."""
    return content_directory("playbooks", configured, "*.yaml")
