"""What every command shares: the two consoles, the database of the chosen config, reports."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from sqlalchemy.orm import Session, sessionmaker

from comfymulti.db import database_file, make_engine, migrate, session_factory
from comfymulti.invocation import refuse_root_in_service_folder, require_database, settings

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")]


def factory() -> sessionmaker[Session]:
    """Sessions on the configured database, migrated to the current schema."""
    cfg = settings()
    url = cfg.database_url
    require_database(database_file(url))
    refuse_root_in_service_folder(cfg.data_dir)
    engine = make_engine(url)
    migrate(engine)
    return session_factory(engine)


def print_report(report: Any, as_json: bool, text: str) -> None:
    """A dataclass report: one JSON object for scripts, else a line a person reads."""
    if as_json:
        out.print(json.dumps(dataclasses.asdict(report), ensure_ascii=False), markup=False)
    else:
        out.print(text, markup=False)


def ago(when: float, now: float | None = None) -> str:
    """A past Unix time as a person reads it: 'just now', '12 s ago', '5 min ago', '3 h ago',
    or the date for anything older than a day."""
    seconds = (time.time() if now is None else now) - when
    if seconds < 2:
        return "just now"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 24 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(when))


@contextmanager
def transfer_bar(label: str, as_json: bool
                 ) -> Iterator[Callable[[int], Callable[[int], None]] | None]:
    """A bar with bytes, bytes/s and ETA for a person at a terminal; None for --json and when
    stdout is a pipe or a file. Yields start(total bytes) -> advance(bytes)."""
    if as_json or not out.is_terminal:
        yield None
        return
    with Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=out, transient=True) as bar:
        def start(total: int) -> Callable[[int], None]:
            task = bar.add_task(label, total=total)
            return lambda n: bar.advance(task, n)
        yield start
