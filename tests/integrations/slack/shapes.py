"""Checks against Slack's documented Block Kit shapes, independent of stanch's builders.

slack_sdk's Block Kit models encode Slack's documented field names and limits (section
text 3000, fields 10 x 2000, header 150, button text 75, value 2000, action_id 255, modal
title 24, private_metadata 3000); a block that round-trips through them unchanged uses only
documented fields within those limits.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

MAX_BLOCKS = 50


def assert_documented_blocks(blocks: list[dict[str, Any]]) -> None:
    """Every block parses as a Slack block, validates, and round-trips unchanged."""
    assert 0 < len(blocks) <= MAX_BLOCKS
    for block in blocks:
        parsed = Block.parse(block)
        assert parsed is not None, block
        assert parsed.to_dict() == block  # to_dict() runs slack_sdk's limit validation


def assert_documented_view(view: dict[str, Any]) -> None:
    """The modal validates as a Slack view and round-trips unchanged."""
    assert View(**view).to_dict() == view
