"""Failed-login limiting.

Failures are counted per (address, account): an address that failed too often for an account
gets 429 for it for a while, and nobody else is affected, which matters when a whole workshop
room shares one NAT address. Per account there is also a much higher cap across addresses;
past it, only addresses without a recent failure for that account are heard, so a guesser
rotating addresses gets one try from each, while the owner typing the right password from
elsewhere is never blocked. Memory is bounded by forgetting the least recently failed entries.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Hashable

from comfymulti.errors import ComfyMultiError


class TooManyAttempts(ComfyMultiError):
    """Too many failed logins; wait a few minutes and try again."""

    status_code = 429
    error_type = "too_many_attempts"


class _Failures:
    """Recent failure times by key, at most `max_keys` keys (least recently failed go first)."""

    def __init__(self, window: float, max_keys: int) -> None:
        self.window = window
        self.max_keys = max_keys
        self._times: OrderedDict[Hashable, deque[float]] = OrderedDict()

    def count(self, key: Hashable) -> int:
        q = self._times.get(key)
        if q is None:
            return 0
        cutoff = time.monotonic() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        if not q:
            del self._times[key]
        return len(q)

    def add(self, key: Hashable) -> None:
        self.count(key)  # drop what has aged out
        q = self._times.pop(key, None) or deque()
        q.append(time.monotonic())
        self._times[key] = q
        while len(self._times) > self.max_keys:
            self._times.popitem(last=False)

    def forget(self, key: Hashable) -> None:
        self._times.pop(key, None)


class RateLimiter:
    def __init__(self, max_failures: int = 10, max_account_failures: int = 100,
                 window: float = 300.0, max_entries: int = 100_000) -> None:
        self.max_failures = max_failures
        self.max_account_failures = max_account_failures
        self._pairs = _Failures(window, max_entries)
        self._accounts = _Failures(window, max_entries)

    def check(self, address: str, account: str) -> None:
        """Raise TooManyAttempts if this address may not try this account now."""
        mine = self._pairs.count((address, account))
        if mine >= self.max_failures or (
                mine and self._accounts.count(account) >= self.max_account_failures):
            raise TooManyAttempts()

    def failed(self, address: str, account: str) -> None:
        self._pairs.add((address, account))
        self._accounts.add(account)

    def succeeded(self, address: str, account: str) -> None:
        self._pairs.forget((address, account))
