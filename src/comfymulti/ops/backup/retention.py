"""Which runs a set keeps, and deleting the rest: manifests first, then every blob and pack that
no kept manifest names (so a kept run is always restorable, and a crash half-way only leaves
garbage).

Snapshot sets keep the newest run of each of the last N hours, days and ISO weeks (`keep`,
e.g. "24h 7d 4w"); mirror sets keep only the latest run, and only when asked (--prune).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from comfymulti.config import BackupMode, BackupSet
from comfymulti.ops.backup import manifest
from comfymulti.ops.backup.s3 import ObjectStore

_PERIOD: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "h": lambda t: (t.year, t.month, t.day, t.hour),
    "d": lambda t: (t.year, t.month, t.day),
    "w": lambda t: tuple(t.isocalendar())[:2],
}


@dataclass
class PruneReport:
    runs_deleted: list[str] = field(default_factory=list)
    objects_deleted: list[str] = field(default_factory=list)  # blobs and packs, by SHA-256
    bytes_freed: int = 0


def run_time(run: str) -> datetime:
    return datetime.strptime(run[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


def kept_runs(runs: list[str], keep: str) -> set[str]:
    """The newest run, and the newest of each of the last N periods per "Nh Nd Nw" rule."""
    newest_first = sorted(runs, reverse=True)
    kept = set(newest_first[:1])
    for rule in keep.split():
        count, period = int(rule[:-1]), _PERIOD[rule[-1]]
        seen: set[tuple[int, ...]] = set()
        for run in newest_first:
            slot = period(run_time(run))
            if slot in seen:
                continue
            if len(seen) == count:
                break
            seen.add(slot)
            kept.add(run)
    return kept


def prune(store: ObjectStore, set_name: str, backup_set: BackupSet, concurrency: int
          ) -> PruneReport:
    """Delete the runs the set does not keep, then the blobs and packs only they named."""
    runs = manifest.runs(store, set_name)
    latest = manifest.require(store, set_name)
    if backup_set.mode == BackupMode.SNAPSHOT:
        kept = kept_runs(runs, backup_set.keep) | {latest.run}
    else:
        kept = {latest.run}
    report = PruneReport(runs_deleted=[r for r in runs if r not in kept])
    with ThreadPoolExecutor(concurrency, thread_name_prefix="prune") as pool:
        manifests = list(pool.map(lambda r: manifest.require(store, set_name, r),
                                  sorted(kept - {latest.run})))
    referenced = {e.pack or e.sha256 for m in [latest, *manifests] for e in m.files}
    manifest.delete_runs(store, set_name, report.runs_deleted)
    unused = {key: size for folder in ("blobs", "packs")
              for key, size in store.list(store.key(set_name, folder) + "/").items()
              if key.rsplit("/", 1)[-1] not in referenced}
    store.delete(sorted(unused))
    report.objects_deleted = sorted(k.rsplit("/", 1)[-1] for k in unused)
    report.bytes_freed = sum(unused.values())
    return report
