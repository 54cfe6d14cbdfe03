"""Backups to S3-compatible storage (R2) and restores from it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from comfymulti.cli.console import JsonOption, out, print_report, transfer_bar
from comfymulti.invocation import settings

backup_app = typer.Typer(help="Backups to S3-compatible storage (R2).", no_args_is_help=True)

SetArgument = Annotated[str, typer.Argument(help="Backup set ([backup.sets.NAME]).")]


@backup_app.command("run")
def backup_run(
    name: SetArgument,
    prune: Annotated[bool, typer.Option(
        help="Also delete older runs, and the stored objects only they name (mirror sets; "
        "snapshot sets always apply their retention).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Back up a set: upload what changed, then write the run's manifest."""
    from comfymulti.ops.backup.backup import run_backup
    from comfymulti.ops.backup.s3 import ObjectStore

    cfg = settings()
    with transfer_bar(f"backup {name}", as_json) as bar:
        r = run_backup(cfg, name, ObjectStore(cfg.backup), bar, prune)
    missing = f"; not found: {', '.join(r.missing)}" if r.missing else ""
    pruned = (f"; pruned {len(r.pruned.runs_deleted)} run(s), {len(r.pruned.objects_deleted)} "
              f"object(s), {r.pruned.bytes_freed} bytes" if r.pruned else "")
    print_report(r, as_json, f"{name}: run {r.run}: {r.files} files, {r.bytes} bytes; "
                  f"uploaded {r.uploaded_files} files, {r.uploaded_bytes} bytes{missing}{pruned}")


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes}m ago"
    hours = minutes // 60
    return f"{hours}h ago" if hours < 48 else f"{hours // 24}d ago"


@dataclass
class StatusReport:
    sets: list[dict[str, Any]] = field(default_factory=list)


@backup_app.command("status")
def backup_status_cmd(as_json: JsonOption = False) -> None:
    """Each set's last run, age, size, files, error; exit 1 if a set is twice overdue.

    Read from this host's records (DATA_DIR/backup-status), not from the storage."""
    from comfymulti import backup_status
    from comfymulti.errors import ComfyMultiError, ConfigError

    cfg = settings()
    if not (cfg.backup.endpoint_url and cfg.backup.bucket):
        raise ConfigError("no backup destination is set, so nothing is backed up: set "
                          "backup.endpoint_url and backup.bucket in the config file (`comfymulti "
                          "init` writes them, commented), then `comfymulti backup install-timer "
                          "user-files --every 1h`")
    now = time.time()
    report = StatusReport()
    table = Table("set", "schedule", "last success", "run", "files", "bytes", "error")
    overdue: list[str] = []
    late: list[str] = []
    for name, backup_set in sorted(cfg.backup.sets.items()):
        st = backup_status.read(cfg.data_dir, name)
        age, stale = st.age(now), st.stale(backup_set.interval, now)
        report.sets.append({"set": name, "schedule": backup_set.schedule, "last_run": st.last_run,
                            "last_success": st.last_success, "age_seconds": age,
                            "files": st.files, "bytes": st.bytes, "error": st.error,
                            "stale": stale})
        table.add_row(name, backup_set.schedule or "by hand", _ago(age) + (" OVERDUE" * stale),
                      st.last_success_run, str(st.files), str(st.bytes), st.error)
        if stale:
            overdue.append(f"{name} (last success {_ago(age)}, schedule {backup_set.schedule})")
            late.append(name)
    if as_json:
        print_report(report, True, "")
    else:
        out.print(table)
    if overdue:
        raise ComfyMultiError(f"backup overdue: {', '.join(overdue)}; run `comfymulti backup "
                              f"run {late[0]}` and check its timer (systemctl status "
                              f"comfymulti-backup-{late[0]}.timer)")


@dataclass
class ListReport:
    set: str
    runs: list[dict[str, Any]] = field(default_factory=list)


@backup_app.command("list")
def backup_list(name: SetArgument, as_json: JsonOption = False) -> None:
    """The set's runs (snapshots) on the storage, oldest first, with files and bytes."""
    from concurrent.futures import ThreadPoolExecutor

    from comfymulti.ops.backup import manifest
    from comfymulti.ops.backup.retention import run_time
    from comfymulti.ops.backup.s3 import ObjectStore
    from comfymulti.ops.backup.sources import get_set

    cfg = settings()
    get_set(cfg, name)
    store = ObjectStore(cfg.backup)
    runs = manifest.runs(store, name)
    latest = manifest.read(store, name)
    with ThreadPoolExecutor(cfg.backup.concurrency) as pool:
        found = list(pool.map(lambda r: manifest.require(store, name, r), runs))
    report = ListReport(name, [
        {"run": m.run, "time": run_time(m.run).isoformat(), "files": len(m.files),
         "bytes": sum(e.size for e in m.files), "latest": latest is not None and
         m.run == latest.run} for m in found])
    lines = [f"{r['run']}  {r['time']}  {r['files']} files  {r['bytes']} bytes"
             + ("  (latest)" if r["latest"] else "") for r in report.runs]
    print_report(report, as_json, "\n".join(lines) or f"{name}: no runs yet")


@backup_app.command("install-timer")
def backup_install_timer(
    name: SetArgument,
    every: Annotated[str | None, typer.Option(
        help="How often, e.g. 30m, 1h, 1d (default: the set's schedule).")] = None,
    directory: Annotated[Path, typer.Option("--dir", help="Where the units go.")] = Path(
        "/etc/systemd/system"),
    env_file: Annotated[str, typer.Option(
        help="Environment file the service reads (for the secret key).")] =
        "/etc/comfymulti/backup.env",
    cron: Annotated[bool, typer.Option("--cron", help="Print a crontab line instead.")] = False,
) -> None:
    """Run `backup run SET` on a schedule: write systemd .service and .timer units."""
    import sys

    from comfymulti.config import find_config
    from comfymulti.errors import InvalidInput
    from comfymulti.invocation import state
    from comfymulti.ops.backup.sources import get_set
    from comfymulti.ops.timers import crontab_line, systemd_units

    cfg = settings()
    every = every or get_set(cfg, name).schedule
    if not every:
        raise InvalidInput(f"backup set {name!r} has no schedule: pass --every, e.g. --every 1h")
    config = find_config(state.config)
    command = [sys.executable, "-m", "comfymulti",
               *(["--config", str(config.resolve())] if config else []), "backup", "run", name]
    if cron:
        out.print(crontab_line(command, every), markup=False)
        return
    units = systemd_units(f"comfymulti-backup-{name}", f"ComfyMulti backup of {name}", command,
                          every, env_file)
    directory.mkdir(parents=True, exist_ok=True)
    for filename, text in units.items():
        (directory / filename).write_text(text, encoding="utf-8")
    out.print(f"Wrote {', '.join(str(directory / f) for f in units)}. Start it with:\n"
              f"  systemctl daemon-reload && systemctl enable --now comfymulti-backup-{name}.timer",
              markup=False)


@backup_app.command("verify")
def backup_verify(
    name: SetArgument,
    snapshot: Annotated[str | None, typer.Option(help="Run id (default: the latest).")] = None,
    deep: Annotated[bool, typer.Option(help="Download and hash every object.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Check the remote objects against the manifest; exit 1 naming any that do not match."""
    from comfymulti.errors import IntegrityError
    from comfymulti.ops.backup.s3 import ObjectStore
    from comfymulti.ops.backup.verify import verify

    cfg = settings()
    r = verify(ObjectStore(cfg.backup), name, cfg.backup.concurrency, snapshot, deep)
    print_report(r, as_json, "\n".join([*r.problems, f"{name}: run {r.run}: {r.objects} "
                                          f"objects checked, {len(r.problems)} problem(s)"]))
    if r.problems:
        raise IntegrityError(f"{name}: {len(r.problems)} file(s) do not match the manifest: "
                             + ", ".join(p.split(": ")[0] for p in r.problems[:3]))


def restore_cmd(
    name: Annotated[str, typer.Argument(help="Backup set.")],
    to: Annotated[Path, typer.Option("--to", help="Folder to recreate the set's root in.")],
    tier: Annotated[list[Path] | None, typer.Option(
        "--tier", help="Folder holding copies to take before downloading (repeatable).")] = None,
    snapshot: Annotated[str | None, typer.Option(help="Run id (default: the latest).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a set into a folder: keep matching files, copy from tiers, download the rest."""
    from comfymulti.errors import IntegrityError
    from comfymulti.ops.backup.cache import Cache
    from comfymulti.ops.backup.restore import restore
    from comfymulti.ops.backup.s3 import ObjectStore

    cfg = settings()
    cache = Cache(cfg.backup_cache_dir / "cache.sqlite")
    try:
        with transfer_bar(f"restore {name}", as_json) as bar:
            r = restore(ObjectStore(cfg.backup), name, to, cache, cfg.backup.concurrency,
                        tier or [], snapshot, bar)
    finally:
        cache.close()
    sources = ", ".join(f"{n} bytes from {src}" for src, n in sorted(r.bytes_from.items()))
    print_report(r, as_json, "\n".join([*r.problems, f"{name}: run {r.run}: {r.files} files "
                                          f"into {to}: {sources or 'nothing'}"]))
    if r.problems:
        raise IntegrityError(f"{name}: {len(r.problems)} file(s) refused: "
                             + ", ".join(p.split(": ")[0] for p in r.problems[:3]))
