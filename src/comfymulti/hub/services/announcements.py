"""Announcements: a line from the organiser shown as a toast in every open workspace.

Kept (the last few) in hub_state so the dashboard lists what was said; delivered over each
workspace's own socket as a custom message type that static/announcements.js turns into a
toast.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy.orm import Session

from comfymulti.errors import InvalidInput
from comfymulti.queue import store

MESSAGE_TYPE = "comfymulti.announcement"
MAX_CHARS = 500
_KEY = "announcements"
_KEEP = 20


def recent(s: Session) -> list[dict[str, Any]]:
    """What was announced, newest first."""
    try:
        found = json.loads(store.get_state(s, _KEY) or "[]")
    except ValueError:
        return []
    return found if isinstance(found, list) else []


def add(s: Session, text: str, author: str) -> dict[str, Any]:
    """Record an announcement; returns it as it is sent to the workspaces."""
    text = text.strip()
    if not text or len(text) > MAX_CHARS:
        raise InvalidInput(f"an announcement is 1 to {MAX_CHARS} characters")
    entry = {"text": text, "by": author, "at": time.time()}
    store.set_state(s, _KEY, json.dumps([entry, *recent(s)][:_KEEP]))
    return entry


def message(entry: dict[str, Any]) -> dict[str, Any]:
    """The event-bus message for every socket (no client id: all of a user's tabs)."""
    return {"type": MESSAGE_TYPE, "client_id": "", "data": entry}
