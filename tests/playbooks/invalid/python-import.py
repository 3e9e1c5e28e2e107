"""A playbook module that raises while it is imported (line 5)."""

from flows.playbook import define_playbook

raise RuntimeError("the lookup table this module reads is missing")

book = define_playbook(id="python-import", version=1, title="x", owner="soc", trigger={})
