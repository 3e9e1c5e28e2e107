"""A module in the playbooks directory that declares no playbook."""


async def contain(ctx: object) -> list[object]:
    return []
