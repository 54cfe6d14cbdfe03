"""Logging: one line per event, with secrets redacted wherever they appear."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path

_SECRETS = re.compile(
    r"(cm[uw]_[A-Za-z0-9_-]{8,})|((?:authorization|password|token|secret)[\"']?\s*[:=]\s*)"
    r"([^\s,&\"']+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(1)[:4] + "…"
        return f"{m.group(2)}***"

    return _SECRETS.sub(repl, text)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup(verbose: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # uvicorn's access log prints query strings (lease ids, never tokens); keep it, redacted.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def write_traceback(folder: Path | None) -> Path:
    """Append the exception being handled, redacted, to FOLDER/logs/errors.log (or a file in
    the temp folder when there is no usable data folder) and return that file's path."""
    text = f"{datetime.now(UTC).isoformat()} {redact(traceback.format_exc())}\n"
    candidates = [folder / "logs" / "errors.log"] if folder is not None else []
    candidates.append(Path(tempfile.gettempdir()) / f"comfymulti-errors-{os.getuid()}.log")
    for path in candidates:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write(text)
            return path
        except OSError:
            continue
    return candidates[-1]
