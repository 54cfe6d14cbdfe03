"""`comfymulti doctor`: what is wrong with this install and the command that fixes each."""

from __future__ import annotations

import dataclasses
import json

import typer

from comfymulti.cli.console import JsonOption, out
from comfymulti.invocation import settings, state


def doctor(as_json: JsonOption = False) -> None:
    """Check config, file ownership, public URL, database, disk, workers, nginx/TLS and clock;
    print what is wrong and the fix; exit 1 if anything failed."""
    from comfymulti.ops.doctor.checks import Install, Status, run_all

    cfg = settings()  # first: it finds the config file
    config = state.config_file.resolve() if state.config_file else None
    results = run_all(Install(cfg, config))
    if as_json:
        out.print(json.dumps([dataclasses.asdict(r) for r in results]), markup=False)
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            out.print(f"{r.status:<4}  {r.name:<{width}}  {r.found}", markup=False)
            if r.fix and r.status in (Status.FAIL, Status.WARN):
                out.print(f"{'':<4}  {'':<{width}}  fix: {r.fix}", markup=False)
    failed = [r.name for r in results if r.status == Status.FAIL]
    if failed:
        raise typer.Exit(1)
