"""`cloud plan`: the cost calculator's command (attached to the `cloud` group)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from comfymulti.cli.console import JsonOption, out
from comfymulti.ops import plan as costs


def plan_cmd(
    users: Annotated[int, typer.Option(min=1, help="Participants.")],
    days: Annotated[int, typer.Option(min=1, help="Workshop days in the season.")],
    hours: Annotated[float, typer.Option(min=0.5, max=24, help="Hours per workshop day.")],
    users_per_gpu: Annotated[int, typer.Option(min=1, help="Participants one GPU serves.")] = 10,
    models_gb: Annotated[float, typer.Option(min=0.1, help="Size of the models.")] = 45.0,
    download_mbps: Annotated[float, typer.Option(
        min=1, help="R2 to GPU machine download speed, Mbit/s.")] = 500.0,
    season_days: Annotated[float, typer.Option(
        min=1, help="Days a kept SFS lives (default: a month).")] = costs.HOURS_PER_MONTH / 24,
    gpu_price: Annotated[float, typer.Option(
        min=0, help="USD per GPU-hour (check today's price).")] = costs.GPU_PER_HOUR,
    sfs_price: Annotated[float, typer.Option(
        min=0, help="USD per GB-month of SFS.")] = costs.SFS_PER_GB_MONTH,
    r2_price: Annotated[float, typer.Option(
        min=0, help="USD per GB-month of R2.")] = costs.R2_PER_GB_MONTH,
    as_json: JsonOption = False,
) -> None:
    """Keeping the SFS all season vs restoring the models from R2 each morning: money and
    minutes."""
    found = costs.plan(costs.PlanInputs(
        users, days, hours, users_per_gpu, models_gb, download_mbps, season_days, gpu_price,
        sfs_price, r2_price))
    if as_json:
        out.print(json.dumps(found.to_dict()), markup=False)
        return
    table = Table(title=f"{users} participants, {days} days x {hours:g} h, {found.gpus} GPU(s), "
                        f"{models_gb:g} GB of models")
    for column in ("option", "SFS", "R2", "GPUs waiting", "total USD", "wait each morning"):
        table.add_column(column, justify="left" if column == "option" else "right")
    for option in (found.keep, found.restore):
        table.add_row(option.name, f"{option.sfs_cost:.2f}", f"{option.r2_cost:.2f}",
                      f"{option.waiting_cost:.2f}", f"{option.total:.2f}",
                      f"{option.minutes_per_morning:.0f} min")
    out.print(table)
    other = found.restore if found.cheaper is found.keep else found.keep
    out.print(f"Cheaper: {found.cheaper.name}, by {other.total - found.cheaper.total:.2f} USD; "
              f"keeping the SFS pays off from {found.break_even_days:.1f} workshop days. "
              f"GPU hours of teaching (both): {found.teaching_cost:.2f} USD.", markup=False)
