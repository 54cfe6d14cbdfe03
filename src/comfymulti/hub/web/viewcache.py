"""Answers kept briefly for polls that ask the same thing again and again.

Every open workspace polls its job list every few seconds; with hundreds of participants
that is most of the hub's work, while a user's list only changes when their jobs do. An
answer is reused while the user's version number (bumped by every change to their jobs) is
unchanged and it is younger than `ttl` (positions and ETAs also move with others' jobs).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable


class ViewCache:
    def __init__(self, ttl: float = 1.0, max_entries: int = 4096) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[Hashable, tuple[int, float, bytes]] = OrderedDict()
        self._lock = threading.Lock()  # handlers run in several threads

    def get(self, key: Hashable, version: int) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != version or time.monotonic() - entry[1] > self.ttl:
                return None
            self._entries.move_to_end(key)
            return entry[2]

    def put(self, key: Hashable, version: int, body: bytes) -> None:
        with self._lock:
            self._entries[key] = (version, time.monotonic(), body)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
