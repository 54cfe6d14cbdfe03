"""What we created at the provider, recorded in the hub database, and how we name it.

Every resource is named PREFIX-ROLE[-N] and described "comfymulti:PREFIX", so `status` tells ours
from anything else on the account, and a rerun after a crash finds by name what a create left
behind before the row was written (an orphan is ours by name but not recorded)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from comfymulti.config import CloudSettings
from comfymulti.models import CloudResource
from comfymulti.ops.cloud.verda import Instance, Volume

GPU, OS, SCRATCH, SFS = "gpu", "os", "scratch", "sfs"


def sfs_name(cfg: CloudSettings) -> str:
    return f"{cfg.name_prefix}-sfs"


def scratch_name(cfg: CloudSettings, slot: int) -> str:
    return f"{cfg.name_prefix}-scratch-{slot}"


def hostname(cfg: CloudSettings, slot: int) -> str:
    return f"{cfg.name_prefix}-gpu-{slot}"


def description(cfg: CloudSettings) -> str:
    return f"comfymulti:{cfg.name_prefix}"


def is_ours(cfg: CloudSettings, name: str) -> bool:
    return name.startswith(f"{cfg.name_prefix}-")


def slot_of(cfg: CloudSettings, host: str) -> int:
    return int(host.removeprefix(f"{cfg.name_prefix}-gpu-"))


def record_instance(s: Session, inst: Instance, os_volume: Volume | None) -> None:
    """The instance and the OS disk the provider made with it (billed too)."""
    if s.get(CloudResource, inst.id) is None:
        s.add(CloudResource(id=inst.id, kind="instance", role=GPU, name=inst.hostname,
                            spec=inst.instance_type, size_gb=0,
                            price_per_hour=inst.price_per_hour, created_at=inst.created_at))
    if os_volume is not None:
        record_volume(s, os_volume, OS)


def record_volume(s: Session, vol: Volume, role: str) -> None:
    if s.get(CloudResource, vol.id) is None:
        s.add(CloudResource(id=vol.id, kind="volume", role=role, name=vol.name, spec=vol.type,
                            size_gb=vol.size, price_per_hour=vol.price_per_hour,
                            created_at=vol.created_at))


def ended(s: Session, resource_ids: list[str], at: float) -> None:
    """The provider stopped billing these at `at` (its clock, from its answer to the delete)."""
    for row in s.scalars(select(CloudResource).where(CloudResource.id.in_(resource_ids),
                                                     CloudResource.ended_at.is_(None))):
        row.ended_at = at


def live(s: Session) -> list[CloudResource]:
    return list(s.scalars(select(CloudResource).where(CloudResource.ended_at.is_(None))
                          .order_by(CloudResource.name)))


def all_rows(s: Session) -> list[CloudResource]:
    return list(s.scalars(select(CloudResource).order_by(CloudResource.created_at)))
