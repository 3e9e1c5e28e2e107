"""Block Kit for working a case from Slack: the summary's "Take it", "Add note" and
"Close…" buttons and the two modals they open.

As elsewhere, alert-derived text only reaches Slack as ``plain_text`` or escaped,
verbatim ``mrkdwn``; button values and modal metadata carry the incident id alone.
"""

from __future__ import annotations

import re

from integrations.slack.messages import (
    JSON,
    MODAL_TITLE_LIMIT,
    SummaryView,
    incident_summary,
    plain,
)

CASE_TAKE_ACTION_ID = "stanch_case_take"
CASE_NOTE_ACTION_ID = "stanch_case_note"
CASE_CLOSE_ACTION_ID = "stanch_case_close"
CASE_ACTIONS = (CASE_TAKE_ACTION_ID, CASE_NOTE_ACTION_ID, CASE_CLOSE_ACTION_ID)
CASE_NOTE_CALLBACK_ID = "stanch_case_note_modal"
CASE_CLOSE_CALLBACK_ID = "stanch_case_close_modal"
CASE_BLOCK_PREFIX = "stanch_case:"
NOTE_BLOCK_ID = "note"
DISPOSITION_BLOCK_ID = "disposition"
SUMMARY_BLOCK_ID = "summary"
DUPLICATE_BLOCK_ID = "duplicate_of"
VALUE_ACTION_ID = "value"
NOTE_INPUT_MAX = 3000
"""Slack's plain_text_input takes at most 3000 characters."""

INCIDENT_ID = r"^INC-\d{8}-\d{4,}$"
DISPOSITIONS = (
    ("true-positive", "True positive"),
    ("benign-true-positive", "Benign true positive"),
    ("false-positive", "False positive"),
    ("duplicate", "Duplicate of another incident"),
)


def _checked(incident_id: str) -> str:
    if not re.fullmatch(INCIDENT_ID, incident_id):
        raise ValueError("incident id has an unexpected shape")
    return incident_id


def case_buttons(incident_id: str, status: str) -> JSON:
    """The summary's case buttons; a closed case keeps only "Add note"."""
    value = _checked(incident_id)
    elements: list[JSON] = []
    if status != "closed":
        elements.append(
            {
                "type": "button",
                "action_id": CASE_TAKE_ACTION_ID,
                "text": plain("Take it", 75),
                "style": "primary",
                "value": value,
            }
        )
    elements.append(
        {
            "type": "button",
            "action_id": CASE_NOTE_ACTION_ID,
            "text": plain("Add note", 75),
            "value": value,
        }
    )
    if status != "closed":
        elements.append(
            {
                "type": "button",
                "action_id": CASE_CLOSE_ACTION_ID,
                "text": plain("Close…", 75),
                "value": value,
            }
        )
    return {"type": "actions", "block_id": f"{CASE_BLOCK_PREFIX}{value}", "elements": elements}


def case_summary(view: SummaryView) -> tuple[str, list[JSON]]:
    """The incident summary with its case status and the case buttons under it.

    Returns:
        ``(text, blocks)`` for ``chat.postMessage`` or ``chat.update``.
    """
    text, blocks = incident_summary(view)
    if view.case_status:
        blocks.append(case_buttons(view.incident_id, view.case_status))
    return text, blocks


def _text_input(block_id: str, label: str, *, multiline: bool, optional: bool = False) -> JSON:
    return {
        "type": "input",
        "block_id": block_id,
        "optional": optional,
        "label": plain(label, 200),
        "element": {
            "type": "plain_text_input",
            "action_id": VALUE_ACTION_ID,
            "multiline": multiline,
            "max_length": NOTE_INPUT_MAX,
        },
    }


def note_modal(incident_id: str) -> JSON:
    """The ``views.open`` payload asking for a note on ``incident_id``."""
    value = _checked(incident_id)
    return {
        "type": "modal",
        "callback_id": CASE_NOTE_CALLBACK_ID,
        "private_metadata": value,
        "title": plain("Add note", MODAL_TITLE_LIMIT),
        "submit": plain("Add note", MODAL_TITLE_LIMIT),
        "close": plain("Cancel", MODAL_TITLE_LIMIT),
        "blocks": [
            {"type": "section", "text": plain(f"Note on {value}")},
            _text_input(NOTE_BLOCK_ID, "Note", multiline=True),
        ],
    }


def close_modal(incident_id: str) -> JSON:
    """The ``views.open`` payload asking how ``incident_id`` ends: disposition, summary and,
    for a duplicate, the incident it duplicates."""
    value = _checked(incident_id)
    return {
        "type": "modal",
        "callback_id": CASE_CLOSE_CALLBACK_ID,
        "private_metadata": value,
        "title": plain("Close incident", MODAL_TITLE_LIMIT),
        "submit": plain("Close", MODAL_TITLE_LIMIT),
        "close": plain("Cancel", MODAL_TITLE_LIMIT),
        "blocks": [
            {"type": "section", "text": plain(f"Closing {value}")},
            {
                "type": "input",
                "block_id": DISPOSITION_BLOCK_ID,
                "label": plain("Disposition", 200),
                "element": {
                    "type": "static_select",
                    "action_id": VALUE_ACTION_ID,
                    "options": [
                        {"text": plain(label, 75), "value": code} for code, label in DISPOSITIONS
                    ],
                },
            },
            _text_input(SUMMARY_BLOCK_ID, "Summary", multiline=True),
            _text_input(DUPLICATE_BLOCK_ID, "Duplicate of (INC-…)", multiline=False, optional=True),
        ],
    }
