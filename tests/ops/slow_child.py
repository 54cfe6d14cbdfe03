"""A backup or restore run in a child process, slowed after each part so a test can kill -9 it
mid-transfer. Prints one line per part that landed (and was journaled), flushed.

    python -m tests.ops.slow_child CONFIG backup SET
    python -m tests.ops.slow_child CONFIG restore SET DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from comfymulti.config import load_settings
from comfymulti.ops.backup.backup import run_backup
from comfymulti.ops.backup.cache import Cache
from comfymulti.ops.backup.journal import Journal
from comfymulti.ops.backup.restore import restore
from comfymulti.ops.backup.s3 import ObjectStore

PAUSE = 0.3


def _slowed(original: Any) -> Any:
    def wrapper(*args: Any) -> None:
        original(*args)
        sys.stdout.write("part\n")  # one write: parts land on several threads
        sys.stdout.flush()
        time.sleep(PAUSE)
    return wrapper


def main() -> None:
    config, action, set_name, *rest = sys.argv[1:]
    settings = load_settings(Path(config))
    Journal.part_stored = _slowed(Journal.part_stored)  # type: ignore[method-assign]
    Journal.range_done = _slowed(Journal.range_done)  # type: ignore[method-assign]
    store = ObjectStore(settings.backup)
    if action == "backup":
        run_backup(settings, set_name, store)
    else:
        cache = Cache(settings.backup_cache_dir / "cache.sqlite")
        restore(store, set_name, Path(rest[0]), cache, settings.backup.concurrency)
    print("finished", flush=True)


if __name__ == "__main__":
    main()
