"""Backups to S3-compatible storage (R2) and restores from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comfymulti.cli.console import JsonOption, print_report
from comfymulti.invocation import settings

backup_app = typer.Typer(help="Backups to S3-compatible storage (R2).", no_args_is_help=True)


@backup_app.command("run")
def backup_run(name: Annotated[str, typer.Argument(help="Backup set ([backup.sets.NAME]).")],
               as_json: JsonOption = False) -> None:
    """Back up a set: upload what changed, then write the run's manifest."""
    from comfymulti.ops.backup.backup import run_backup
    from comfymulti.ops.backup.s3 import ObjectStore

    cfg = settings()
    r = run_backup(cfg, name, ObjectStore(cfg.backup))
    missing = f"; not found: {', '.join(r.missing)}" if r.missing else ""
    print_report(r, as_json, f"{name}: run {r.run}: {r.files} files, {r.bytes} bytes; "
                  f"uploaded {r.uploaded_files} files, {r.uploaded_bytes} bytes{missing}")


@backup_app.command("verify")
def backup_verify(
    name: Annotated[str, typer.Argument(help="Backup set.")],
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
        r = restore(ObjectStore(cfg.backup), name, to, cache, cfg.backup.concurrency,
                    tier or [], snapshot)
    finally:
        cache.close()
    sources = ", ".join(f"{n} bytes from {src}" for src, n in sorted(r.bytes_from.items()))
    print_report(r, as_json, "\n".join([*r.problems, f"{name}: run {r.run}: {r.files} files "
                                          f"into {to}: {sources or 'nothing'}"]))
    if r.problems:
        raise IntegrityError(f"{name}: {len(r.problems)} file(s) refused: "
                             + ", ".join(p.split(": ")[0] for p in r.problems[:3]))
