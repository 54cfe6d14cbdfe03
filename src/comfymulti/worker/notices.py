"""Problems the worker keeps running through (ComfyUI or the hub unreachable, TLS refused),
said clearly and repeated every so often while they last, not once per retry; and the causes
of transport errors in words an organiser can act on."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable

import httpx

REPEAT_SECONDS = 30.0


class Notices:
    """Logs a problem when it starts, then every `every` seconds while it lasts, and once
    when it is over."""

    def __init__(self, log: logging.Logger, every: float = REPEAT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.every = every
        self.clock = clock
        self._since: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def problem(self, key: str, message: str) -> None:
        now = self.clock()
        self._since.setdefault(key, now)
        last = self._last.get(key)
        if last is None or now - last >= self.every:
            self._last[key] = now
            lasting = now - self._since[key]
            self.log.warning("%s%s", message, f" (for {lasting:.0f} s)" if lasting >= 1 else "")

    def resolved(self, key: str, message: str) -> None:
        if self._since.pop(key, None) is not None:
            self._last.pop(key, None)
            self.log.info("%s", message)


def transport_problem(exc: BaseException, what: str, url: str) -> str:
    """Why `url` could not be reached, and what to do about it."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (f"{what} at {url}: TLS certificate not trusted ({cause.verify_message}); "
                    "for a private CA or a self-signed hub pass --ca FILE with the CA "
                    "certificate (PEM), else fix the certificate (comfymulti doctor on the hub)")
        if isinstance(cause, ssl.SSLError):
            return f"{what} at {url}: TLS failed ({cause.reason}); is it an https:// URL " \
                "served over TLS?"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectTimeout | httpx.ReadTimeout):
        return f"{what} at {url}: no answer in time; check the URL and the firewall"
    text = str(exc)
    if "Name or service not known" in text or "nodename nor servname" in text:
        return f"{what} at {url}: host name unknown; check the URL"
    if isinstance(exc, httpx.ConnectError):
        return f"{what} at {url}: nothing answers ({text or type(exc).__name__}); is it " \
            "running, and is the URL right?"
    return f"{what} at {url} unreachable ({type(exc).__name__}: {text})"
