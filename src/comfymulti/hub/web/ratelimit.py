"""Failed-login limiting: too many failures from one address for one account → 429 for a while."""

from __future__ import annotations

import time
from collections import deque

from comfymulti.errors import ComfyMultiError


class TooManyAttempts(ComfyMultiError):
    """Too many failed logins; wait a few minutes and try again."""

    status_code = 429
    error_type = "too_many_attempts"


class RateLimiter:
    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        cutoff = time.monotonic() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def check(self, address: str, account: str) -> None:
        """Raise TooManyAttempts if this address failed too often for this account."""
        if len(self._recent((address, account))) >= self.max_failures:
            raise TooManyAttempts()

    def failed(self, address: str, account: str) -> None:
        self._recent((address, account)).append(time.monotonic())
        if len(self._failures) > 100_000:  # bound memory under a flood of made-up names
            self._failures.clear()

    def succeeded(self, address: str, account: str) -> None:
        self._failures.pop((address, account), None)
