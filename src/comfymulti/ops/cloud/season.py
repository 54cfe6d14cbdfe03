"""Workshop seasons: the SFS with the models lives from season-start to season-end.

season-start creates the SFS and fills its models folder from R2 (restore tiers: what is
already there and matches is kept). season-end deletes nothing unless a verified R2 backup holds
every file on the SFS, and names each one that is missing; then SFS and scratch volumes go (to
the trash) and the bill drops to R2 storage only.
"""

from __future__ import annotations

from pathlib import Path

from comfymulti.db import transaction
from comfymulti.errors import CloudError
from comfymulti.ops.backup import manifest
from comfymulti.ops.backup.cache import Cache
from comfymulti.ops.backup.restore import restore
from comfymulti.ops.backup.s3 import ObjectStore
from comfymulti.ops.backup.verify import verify
from comfymulti.ops.cloud import state
from comfymulti.ops.cloud.day import our_instances
from comfymulti.ops.cloud.plan import Cloud, Plan

MODELS_SET = "models"
R2_GB_MONTH = 0.015  # R2 Standard storage, reference §2.2
GB = 1000**3


def season_start(c: Cloud) -> Plan:
    cfg = c.cfg
    name = state.sfs_name(cfg)
    plan = Plan(f"start the season: shared file system {name} in {cfg.location}")
    if c.verda.find_volume(name) is None:
        price = c.verda.storage_per_hour(cfg.sfs_size_gb, shared=True)
        plan.add(f"create SFS {name} ({cfg.sfs_size_gb} GB, ${price:.4f}/h, "
                 f"${price * 730:.2f}/month)", lambda: _ensure_sfs(c))
    target = c.settings.backup_root(c.settings.backup.sets[MODELS_SET]) \
        if MODELS_SET in c.settings.backup.sets else None
    if target is not None:
        ObjectStore(c.settings.backup)  # an unset [backup] stops here, before anything is made
        plan.add(f"fill {target} with the models from R2 (kept where they already match)",
                 lambda: _fill(c, target))
    return plan


def _ensure_sfs(c: Cloud) -> None:
    name = state.sfs_name(c.cfg)
    vol = c.verda.find_volume(name) or c.verda.create_volume(name, True, c.cfg.sfs_size_gb)
    with transaction(c.factory) as s:
        state.record_volume(s, vol, state.SFS)


def _fill(c: Cloud, target: Path) -> None:
    store = ObjectStore(c.settings.backup)
    if manifest.read(store, MODELS_SET) is None:
        c.say(f"  no '{MODELS_SET}' backup in R2 yet: nothing to fill (back the models up with "
              f"'comfymulti backup run {MODELS_SET}')")
        return
    cache = Cache(c.settings.backup_cache_dir / "cache.sqlite")
    try:
        r = restore(store, MODELS_SET, target, cache, c.settings.backup.concurrency)
    finally:
        cache.close()
    if r.problems:
        raise CloudError(f"filling the SFS: {len(r.problems)} file(s) refused, first: "
                         f"{r.problems[0]}; rerun 'comfymulti cloud season-start --yes'")
    c.say(f"  {r.files} model files in {target}: " + ", ".join(
        f"{n} bytes from {src}" for src, n in sorted(r.bytes_from.items())))


def missing_from_backup(c: Cloud) -> list[str]:
    """Files on the SFS (as mounted here) that no verified backup holds as they are now."""
    settings = c.settings
    sfs = Path(c.cfg.sfs_mount)
    if not sfs.is_dir():
        raise CloudError(f"cannot check what the SFS holds: {sfs} is not mounted here "
                         "([cloud] sfs_mount); run season-end where it is mounted")
    store = ObjectStore(settings.backup)
    held: dict[Path, str] = {}
    for name, backup_set in settings.backup.sets.items():
        root = settings.backup_root(backup_set)
        if not root.is_relative_to(sfs) or (found := manifest.read(store, name)) is None:
            continue
        bad = {p.split(": ")[0] for p in verify(store, name, settings.backup.concurrency).problems}
        held.update({root / e.path: e.sha256 for e in found.files if e.path not in bad})
    cache = Cache(settings.backup_cache_dir / "cache.sqlite")
    try:
        return sorted(str(p.relative_to(sfs)) for p in sfs.rglob("*")
                      if p.is_file() and held.get(p) != cache.hash_of(p))
    finally:
        cache.close()


def season_end(c: Cloud) -> Plan:
    cfg = c.cfg
    if live := our_instances(c):
        raise CloudError(f"instances still running ({', '.join(i.hostname for i in live)}): "
                         "run 'comfymulti cloud day-end --yes' first")
    volumes = [v for v in c.verda.volumes() if state.is_ours(cfg, v.name)]
    plan = Plan("end the season: delete the SFS and scratch volumes (to the trash)")
    if not volumes:
        return plan
    if missing := missing_from_backup(c):
        raise CloudError(f"season-end refused: {len(missing)} file(s) on the SFS are not in a "
                         f"verified R2 backup: {', '.join(missing[:5])}"
                         + (" ..." if len(missing) > 5 else "")
                         + f"; back them up ('comfymulti backup run {MODELS_SET}') and rerun")
    for vol in volumes:
        plan.add(f"delete volume {vol.name} ({vol.size} GB, ${vol.price_per_hour:.4f}/h)",
                 lambda vol=vol: _delete_volume(c, vol.id))
    hourly = sum(v.price_per_hour for v in volumes)
    plan.notes.append(f"Bill: Verda storage ${hourly * 730:.2f}/month -> $0; R2 keeps the "
                      f"backups (${_r2_monthly(c):.2f}/month)")
    return plan


def _r2_monthly(c: Cloud) -> float:
    store = ObjectStore(c.settings.backup)
    size = sum(sum(e.size for e in m.files) for name in c.settings.backup.sets
               if (m := manifest.read(store, name)) is not None)
    return size / GB * R2_GB_MONTH


def _delete_volume(c: Cloud, volume_id: str) -> None:
    vol = next((v for v in c.verda.volumes() if v.id == volume_id), None)
    if vol is not None:
        with transaction(c.factory) as s:
            state.record_volume(s, vol, state.SFS if vol.shared else state.SCRATCH)
        c.verda.delete_volume(vol.id)
    with transaction(c.factory) as s:
        state.ended(s, [volume_id], c.verda.now())
