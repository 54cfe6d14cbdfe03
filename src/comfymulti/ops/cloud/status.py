"""`cloud status`: every billable thing on the account, ours or not, and what it costs.

Ours = recorded in the hub database; an orphan carries our name but no record (a run crashed
between the create and the record); anything else belongs to someone else. Stopped instances
and volumes with no instance are called out: both bill although nothing uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from comfymulti.db import transaction
from comfymulti.models import CloudResource
from comfymulti.ops.cloud import costs, state
from comfymulti.ops.cloud.plan import Cloud
from comfymulti.ops.cloud.verda import GONE

OURS, ORPHAN, OTHER = "ours", "orphan", "other"


@dataclass
class Billable:
    kind: str
    name: str
    id: str
    status: str
    owner: str
    per_hour: float
    today: float
    month: float
    warning: str = ""


@dataclass
class StatusReport:
    balance: float
    resources: list[Billable] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    trash: list[str] = field(default_factory=list)  # not billed; gone for good after 96 h

    @property
    def per_hour(self) -> float:
        return sum(r.per_hour for r in self.resources)


def _windows(now: float) -> tuple[float, float]:
    at = datetime.fromtimestamp(now, UTC)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp(), day.replace(day=1).timestamp()


def status(c: Cloud) -> StatusReport:
    cfg = c.cfg
    instances = [i for i in c.verda.instances() if i.status not in GONE]
    volumes = c.verda.volumes()
    now = c.verda.now()
    today, month = _windows(now)
    with transaction(c.factory) as s:
        known = {r.id: r for r in state.live(s)}
    out = StatusReport(c.verda.balance(), trash=sorted(v.name for v in c.verda.trash()))
    found = ([("instance", i.hostname, i.id, i.status, i.price_per_hour, i.created_at)
              for i in instances]
             + [("volume", v.name, v.id, v.status, v.price_per_hour, v.created_at)
                for v in volumes])
    alive = {i.id for i in instances}
    users = {v.id: set(v.instance_ids) & alive for v in volumes}
    for kind, name, rid, status_, per_hour, created in found:
        row = known.get(rid) or CloudResource(id=rid, price_per_hour=per_hour,
                                              created_at=created, ended_at=None)
        owner = OURS if rid in known else ORPHAN if state.is_ours(cfg, name) else OTHER
        item = Billable(kind, name, rid, status_, owner, per_hour,
                        costs.cost(row, now, today), costs.cost(row, now, month))
        if kind == "instance" and status_ == "offline":
            item.warning = "STOPPED BUT BILLED: only a delete stops the meter"
        elif kind == "volume" and not users[rid]:
            item.warning = "BILLED WITH NO INSTANCE"
        if owner == ORPHAN:
            item.warning = (item.warning + "; " if item.warning else "") + \
                "orphan: ours by name, not recorded; rerun the interrupted command"
        out.resources.append(item)
    present = {r.id for r in out.resources}
    out.warnings = [f"{r.name} ({r.id}) is recorded as live but Verda no longer lists it"
                    for r in known.values() if r.id not in present]
    return out
