"""`cloud plan`: what a workshop costs with the models kept on the SFS all season, against
restoring them from R2 each morning, in money and in minutes the GPUs wait.

A pure calculator. Default prices are Verda's and Cloudflare's list prices of Aug 2026 (USD,
from the research notes on Verda and R2, section 2); pass today's: Verda's moved almost daily.
Both options keep the same R2 copy and the same GPU hours of teaching; they differ in SFS hours
and in the GPUs billed while the models download before the first job can run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

HOURS_PER_MONTH = 730.0  # how Verda turns a monthly price into an hourly one
GPU_PER_HOUR = 3.25  # 1x H100 SXM5 80 GB on demand (spot: half)
SFS_PER_GB_MONTH = 0.20  # NVMe_Shared, billed attached or not
R2_PER_GB_MONTH = 0.015  # R2 Standard; no egress fee


@dataclass(frozen=True)
class PlanInputs:
    users: int
    days: int
    hours: float
    users_per_gpu: int = 10
    models_gb: float = 45.0
    download_mbps: float = 500.0
    season_days: float = HOURS_PER_MONTH / 24  # how long a kept SFS lives: a month
    gpu_per_hour: float = GPU_PER_HOUR
    sfs_per_gb_month: float = SFS_PER_GB_MONTH
    r2_per_gb_month: float = R2_PER_GB_MONTH


@dataclass(frozen=True)
class Option:
    name: str
    sfs_cost: float
    r2_cost: float
    waiting_cost: float  # GPUs billed while the models arrive
    minutes_per_morning: float

    @property
    def total(self) -> float:
        return self.sfs_cost + self.r2_cost + self.waiting_cost


@dataclass(frozen=True)
class Plan:
    inputs: PlanInputs
    gpus: int
    teaching_cost: float  # the GPU hours of the workshop itself, the same for both options
    keep: Option
    restore: Option
    break_even_days: float  # workshop days from which keeping the SFS is cheaper

    @property
    def cheaper(self) -> Option:
        return self.keep if self.keep.total <= self.restore.total else self.restore

    def to_dict(self) -> dict[str, object]:
        options = {o.name: {**asdict(o), "total": round(o.total, 2)}
                   for o in (self.keep, self.restore)}
        return {"inputs": asdict(self.inputs), "gpus": self.gpus,
                "teaching_cost": round(self.teaching_cost, 2), "options": options,
                "cheaper": self.cheaper.name, "break_even_days": round(self.break_even_days, 1)}


KEEP = "keep the SFS all season"
RESTORE = "restore from R2 each morning"


def plan(inputs: PlanInputs) -> Plan:
    """Both options' costs for the workshop (inputs are validated by the caller's types)."""
    i = inputs
    gpus = math.ceil(i.users / i.users_per_gpu)
    download_hours = i.models_gb * 8000 / i.download_mbps / 3600  # GB -> Mbit
    sfs_hourly = i.models_gb * i.sfs_per_gb_month / HOURS_PER_MONTH
    r2 = i.models_gb * i.r2_per_gb_month * i.season_days * 24 / HOURS_PER_MONTH
    keep = Option(KEEP, sfs_hourly * i.season_days * 24, r2, 0.0, 0.0)
    per_day = sfs_hourly * (i.hours + download_hours) + gpus * i.gpu_per_hour * download_hours
    restore = Option(RESTORE, sfs_hourly * (i.hours + download_hours) * i.days, r2,
                     gpus * i.gpu_per_hour * download_hours * i.days, download_hours * 60)
    return Plan(i, gpus, gpus * i.gpu_per_hour * i.hours * i.days, keep, restore,
                keep.sfs_cost / per_day)
