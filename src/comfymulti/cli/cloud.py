"""`comfymulti cloud ...`: workshop days and seasons on Verda, what bills, what it cost.

Every command that creates or deletes prints its plan first; --dry-run stops there, and
without --yes nothing is changed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from comfymulti.cli.console import JsonOption, factory, out, print_report
from comfymulti.cli.forecast import plan_cmd
from comfymulti.invocation import settings

if TYPE_CHECKING:
    from comfymulti.ops.cloud.plan import Cloud, Plan

cloud_app = typer.Typer(help="GPU days and seasons on Verda; what bills and what it cost.",
                        no_args_is_help=True)
cloud_app.command("plan")(plan_cmd)

DryRun = Annotated[bool, typer.Option("--dry-run", help="Only show the plan.")]
Yes = Annotated[bool, typer.Option("--yes", help="Carry out the plan (create/delete).")]


def _cloud() -> Cloud:
    from comfymulti.ops.cloud.plan import Cloud
    from comfymulti.ops.cloud.verda import Verda

    cfg = settings()
    return Cloud(cfg, Verda(cfg.cloud), factory(), lambda line: out.print(line, markup=False))


def _run(plan: Plan, dry_run: bool, yes: bool, done: str) -> None:
    from comfymulti.ops.cloud.plan import carry_out

    seconds = carry_out(plan, dry_run, yes, lambda line: out.print(line, markup=False))
    if plan.steps and not dry_run:
        out.print(f"{done} in {seconds:.0f} s.", markup=False)


@cloud_app.command("status")
def status_cmd(as_json: JsonOption = False) -> None:
    """Every billable resource (ours and others), its price per hour and cost today/month."""
    from comfymulti.ops.cloud.status import status

    r = status(_cloud())
    if as_json:
        print_report(r, True, "")
        return
    table = Table("kind", "name", "status", "owner", "$/h", "today", "month", "warning")
    for b in r.resources:
        table.add_row(b.kind, b.name, b.status, b.owner, f"{b.per_hour:.4f}", f"{b.today:.2f}",
                      f"{b.month:.2f}", b.warning)
    out.print(table)
    for line in r.warnings:
        out.print(f"warning: {line}", markup=False)
    if r.trash:
        out.print(f"In the trash (not billed, deleted for good after 96 h): "
                  f"{', '.join(r.trash)}", markup=False)
    out.print(f"Billing now: ${r.per_hour:.4f}/h; balance ${r.balance:.2f}", markup=False)


@cloud_app.command("day-start")
def day_start_cmd(
    gpus: Annotated[int, typer.Option(help="GPU instances to run.")] = 1,
    type_: Annotated[str | None, typer.Option("--type", help="Instance type "
                                              "(config: cloud.instance_type).")] = None,
    spot: Annotated[bool | None, typer.Option("--spot/--no-spot", help="Spot or on-demand "
                                              "(config: cloud.spot).")] = None,
    dry_run: DryRun = False, yes: Yes = False,
) -> None:
    """Create the GPU instances, attach SFS and scratch, wait until their workers register."""
    from comfymulti.ops.cloud.day import day_start

    c = _cloud()
    _run(day_start(c, gpus, type_, spot), dry_run, yes, "Day started")


@cloud_app.command("day-end")
def day_end_cmd(dry_run: DryRun = False, yes: Yes = False) -> None:
    """Drain the workers, back up and verify, delete the instances; keep SFS and scratch."""
    from comfymulti.ops.cloud.day import day_end

    _run(day_end(_cloud()), dry_run, yes, "Day ended")


@cloud_app.command("scale")
def scale_cmd(gpus: Annotated[int, typer.Option(help="GPU instances wanted.")],
              dry_run: DryRun = False, yes: Yes = False) -> None:
    """Add GPU instances, or drain and remove the extra ones."""
    from comfymulti.ops.cloud.day import scale

    _run(scale(_cloud(), gpus), dry_run, yes, "Scaled")


@cloud_app.command("season-start")
def season_start_cmd(dry_run: DryRun = False, yes: Yes = False) -> None:
    """Create the shared file system and fill it with the models from R2."""
    from comfymulti.ops.cloud.season import season_start

    _run(season_start(_cloud()), dry_run, yes, "Season started")


@cloud_app.command("season-end")
def season_end_cmd(dry_run: DryRun = False, yes: Yes = False) -> None:
    """Refuse unless R2 holds every file on the SFS; then delete the SFS and scratch volumes."""
    from comfymulti.ops.cloud.season import season_end

    _run(season_end(_cloud()), dry_run, yes, "Season ended")


@cloud_app.command("costs")
def costs_cmd(as_json: JsonOption = False) -> None:
    """What the recorded resources cost: per resource, day, job and user."""
    import time

    from comfymulti.db import transaction
    from comfymulti.ops.cloud.costs import report

    with transaction(factory()) as s:
        r = report(s, time.time())
    if as_json:
        print_report(r, True, "")
        return
    for title, values in (("resource", r.per_resource), ("day (UTC)", r.per_day),
                          ("user", r.per_user)):
        table = Table(title, "$")
        for key, amount in values.items():
            table.add_row(key, f"{amount:.2f}")
        out.print(table)
    out.print(f"Total: ${r.total:.2f} ({len(r.per_job)} jobs priced)", markup=False)
