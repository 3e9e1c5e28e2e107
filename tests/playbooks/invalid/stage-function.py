"""A stage function that is not async (line 15)."""

from flows.playbook import define_playbook

book = define_playbook(
    id="stage-function",
    version=1,
    title="A stage function that is not async",
    owner="soc-leads",
    trigger={"min_severity": "low"},
)


@book.contain
def contain(ctx):
    return []
