"""Credential phishing: a user clicked a link to a fake sign-in page.

Treat the credentials as stolen: end the sessions, expire the password, reset the factors.
Block the phishing site's address where the alert names one; the URL itself and the search
for other recipients go to an analyst, because stanch's firewall capability blocks
addresses, not URLs, and stanch has no mail search.

Written in Python (it was ``phishing-click.yaml`` v1) to show what code adds: the loop over
the users the identity provider found decides per user, and an account the provider no
longer reports active is told to the analyst instead of planned for.
"""

from flows.playbook import PlannedAction, StageContext, define_playbook

book = define_playbook(
    id="phishing-click",
    version=2,
    title="Credential phishing link clicked",
    owner="soc-leads",
    created="2026-11-21T07:10:09Z",  # first commit (as phishing-click.yaml)
    modified="2026-12-03T17:13:18Z",  # this version: converted to Python
    attack=["T1566.002", "T1204.001"],
    trigger={
        "sources": ["defender", "crowdstrike", "sentinelone"],
        "min_severity": "low",
        "tactics": ["TA0001"],  # Initial Access
        "techniques": ["T1566", "T1204"],  # Phishing, User Execution (and sub-techniques)
    },
)


@book.investigate
async def investigate(ctx: StageContext) -> None:
    """Find whoever clicked; the same mail usually went to more people."""
    users = []
    for login in ctx.incident.users:
        user = await ctx.identity.find_user(login=login)
        if user is not None:
            users.append(user)
    ctx.state["users"] = users
    for sender in ctx.incident.email_addresses:
        ctx.note(
            f"other recipients of mail from {sender} in the last 7 days (mail gateway "
            "message trace)",
            step="other_recipients",
        )


@book.contain
async def contain(ctx: StageContext) -> list[PlannedAction]:
    """End the sessions a stolen password opened; block the site's address for a day."""
    plans = []
    for user in ctx.state["users"]:
        if user.status != "active":
            ctx.note(f"{user.login} is {user.status} at the provider: no session to end")
            continue
        plans.append(
            ctx.plan(
                "identity.revoke_sessions",
                step="revoke_sessions",
                user_id=user.id,
                label=user.login,
                description="A session token may already be in the attacker's hands",
            )
        )
    for ip in ctx.incident.external_ips:
        plans.append(
            ctx.plan(
                "firewall.block_ip",
                step="block_site_ip",
                ip=ip,
                ttl_seconds=86400,
                reason=f"stanch {ctx.incident.id}: phishing site",
            )
        )
    for url in ctx.incident.urls:
        ctx.note(f"block the URL {url} on the web proxy or mail gateway", step="block_url")
    return plans


@book.remediate
async def remediate(ctx: StageContext) -> list[PlannedAction]:
    """Assume the password was typed into the fake page; proxy kits also steal MFA."""
    plans = []
    for user in ctx.state["users"]:
        plans.append(
            ctx.plan(
                "identity.expire_password",
                step="expire_password",
                user_id=user.id,
                label=user.login,
            )
        )
        plans.append(
            ctx.plan(
                "identity.reset_factors", step="reset_factors", user_id=user.id, label=user.login
            )
        )
    return plans
