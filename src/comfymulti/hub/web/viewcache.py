"""Answers kept for polls that ask the same thing again and again.

Every open workspace polls its job list every few seconds; with hundreds of participants
that is most of the hub's work, while a user's list only changes when their jobs do. An
answer is reused while the user's version number (bumped by every change to their jobs) is
unchanged; an answer that shows positions and ETAs (which also move with others' jobs) is
reused only for as long as those are cached anyway.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class ViewCache(Generic[T]):
    def __init__(self, max_entries: int = 4096) -> None:
        self._max = max_entries
        self._entries: OrderedDict[Hashable, tuple[int, float, T]] = OrderedDict()
        self._lock = threading.Lock()  # handlers run in several threads

    def get(self, key: Hashable, version: int) -> T | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != version or time.monotonic() > entry[1]:
                return None
            self._entries.move_to_end(key)
            return entry[2]

    def put(self, key: Hashable, version: int, body: T, ttl: float = math.inf) -> None:
        """Keep `body` for `key` while the version stays `version`, at most `ttl` seconds."""
        with self._lock:
            self._entries[key] = (version, time.monotonic() + ttl, body)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
