"""Workshop days: start GPU instances that join the hub, end them after draining and backing up.

Data-safe order on start: an instance is created with no data volume; once it has booted it is
shut down, the scratch disk and the SFS are attached (block volumes attach only to an offline
instance, and a disk attached at creation was reported wiped), then it is started again. On
end, nothing is deleted until the workers drained and the backups ran and verified; a delete
names exactly the OS disk, so scratch and SFS stay (and keep billing, which is printed).
"""

from __future__ import annotations

import time

from comfymulti.db import transaction
from comfymulti.errors import CloudError, ComfyMultiError, ConfigError, InvalidInput
from comfymulti.ops.cloud import costs, state
from comfymulti.ops.cloud.plan import Cloud, Plan
from comfymulti.ops.cloud.verda import GONE, Instance
from comfymulti.ops.node.script import startup_script
from comfymulti.queue import fleet

BOOTING = ("new", "ordered", "validating", "pending", "provisioning")
FAILED = ("error", "no_capacity", "unknown")
NIGHT_HOURS = 16.0


def our_instances(c: Cloud) -> list[Instance]:
    """Our GPU instances that still exist (any state but gone), by slot."""
    prefix = f"{c.cfg.name_prefix}-gpu-"
    found = [i for i in c.verda.instances()
             if i.hostname.startswith(prefix) and i.status not in GONE]
    return sorted(found, key=lambda i: state.slot_of(c.cfg, i.hostname))


def day_start(c: Cloud, gpus: int, instance_type: str | None = None,
              spot: bool | None = None) -> Plan:
    cfg = c.cfg
    if not 1 <= gpus <= cfg.max_gpus:
        raise InvalidInput(f"--gpus {gpus}: must be 1 to {cfg.max_gpus} ([cloud] max_gpus)")
    itype, spot = instance_type or cfg.instance_type, cfg.spot if spot is None else spot
    token = c.settings.worker.token.get_secret_value()
    if not token:
        raise ConfigError("[worker] token is empty: create one with 'comfymulti workers token' "
                          "and set COMFYMULTI_WORKER__TOKEN")
    _check_account(c)
    types = c.verda.instance_types()
    if itype not in types:
        raise InvalidInput(f"unknown instance type {itype!r}; Verda offers: "
                           + ", ".join(sorted(types)))
    price = types[itype].spot_price_per_hour if spot else types[itype].price_per_hour
    if c.verda.find_volume(state.sfs_name(cfg)) is None:
        raise CloudError(f"no shared file system {state.sfs_name(cfg)!r} with the models: run "
                         "'comfymulti cloud season-start --yes' first")
    running = {i.hostname for i in our_instances(c)}
    volumes = {v.name for v in c.verda.volumes()}
    new = [slot for slot in range(1, gpus + 1) if state.hostname(cfg, slot) not in running]
    if new and not c.verda.is_available(itype, spot):
        kind = "spot " if spot else ""
        raise CloudError(f"Verda has no {kind}capacity for {itype} in {cfg.location} now: "
                         "try another --type" + (", or without --spot" if spot else ", or --spot")
                         + ", or another [cloud] location")
    if new and cfg.daily_budget:
        _check_budget(c, price * len(new))
    script: dict[str, str] = {}
    plan = Plan(f"start the day: {gpus} x {itype}{' spot' if spot else ''} in {cfg.location}")
    plan.add("startup script (runs 'comfymulti node bootstrap' on first boot)",
             lambda: script.setdefault("id", c.verda.startup_script(
                 f"{cfg.name_prefix}-node", startup_script(c.settings, token))))
    for slot in range(1, gpus + 1):
        host, scratch = state.hostname(cfg, slot), state.scratch_name(cfg, slot)
        if scratch not in volumes:
            plan.add(f"scratch volume {scratch} ({cfg.scratch_size_gb} GB NVMe, "
                     f"${c.verda.storage_per_hour(cfg.scratch_size_gb):.4f}/h)",
                     lambda slot=slot: _ensure_scratch(c, slot))
        if host not in running:
            plan.add(f"instance {host} ({itype}, ${price:.2f}/h, OS disk {cfg.os_volume_gb} GB)",
                     lambda slot=slot: _ensure_instance(c, slot, itype, spot, script.get("id")))
        plan.add(f"attach {scratch} and the SFS to {host} while it is shut down, start it",
                 lambda slot=slot: _attach_and_start(c, slot))
        plan.add(f"wait until worker {host} registers with the hub",
                 lambda host=host: _wait_registered(c, host))
    if new:
        plan.notes.append(f"New compute billing: ${price * len(new):.2f}/h "
                          f"({len(new)} x ${price:.2f}/h) from creation until day-end.")
    return plan


def _check_account(c: Cloud) -> None:
    """[cloud] location, image and SSH keys must exist on the account: one line if not."""
    cfg = c.cfg
    if cfg.location not in (known := c.verda.locations()):
        raise ConfigError(f"[cloud] location {cfg.location!r} is not a Verda location; "
                          f"known: {', '.join(known)}")
    if cfg.image not in (images := c.verda.images()):
        raise ConfigError(f"[cloud] image {cfg.image!r} is not offered; e.g. "
                          + ", ".join(images[:3]))
    if missing := sorted(set(cfg.ssh_key_ids) - set(c.verda.ssh_key_ids())):
        raise ConfigError(f"[cloud] ssh_key_ids: no SSH key {', '.join(missing)} on the "
                          "account; add it in the Verda console (Keys) or fix the id")


def _check_budget(c: Cloud, hourly: float) -> None:
    """Refuse to start more if today's spend plus one hour of it would pass the daily budget."""
    now = c.verda.now()
    with transaction(c.factory) as s:
        spent = costs.report(s, now).per_day.get(costs.day_of(now), 0.0)
    if spent + hourly > c.cfg.daily_budget:
        raise CloudError(f"daily budget ${c.cfg.daily_budget:.2f} would be passed: "
                         f"${spent:.2f} spent today, starting these costs ${hourly:.2f}/h; "
                         "raise [cloud] daily_budget or start fewer GPUs")


def _ensure_scratch(c: Cloud, slot: int) -> None:
    name = state.scratch_name(c.cfg, slot)
    vol = c.verda.find_volume(name) or c.verda.create_volume(name, False, c.cfg.scratch_size_gb)
    with transaction(c.factory) as s:
        state.record_volume(s, vol, state.SCRATCH)


def _record(c: Cloud, inst: Instance) -> None:
    """Record an instance and its OS disk (also one a crashed run created but never noted)."""
    os_volume = next((v for v in c.verda.volumes() if v.id == inst.os_volume_id), None)
    with transaction(c.factory) as s:
        state.record_instance(s, inst, os_volume)


def _ensure_instance(c: Cloud, slot: int, itype: str, spot: bool, script_id: str | None) -> None:
    host = state.hostname(c.cfg, slot)
    inst = c.verda.find_instance(host) or c.verda.create_instance(
        host, state.description(c.cfg), itype, spot, script_id)
    _record(c, inst)


def _settled(c: Cloud, host: str, failed_ok: bool = False) -> Instance:
    """The instance once it has left the booting states (an error state fails loudly unless
    `failed_ok`: day-end must still be able to delete it)."""

    def check() -> Instance | None:
        inst = c.verda.find_instance(host)
        if inst is None:
            raise CloudError(f"instance {host} is gone (spot reclaimed?); rerun day-start")
        if inst.status in FAILED and not failed_ok:
            raise CloudError(f"instance {host} is in state {inst.status}: end it with "
                             "'comfymulti cloud day-end --yes' and try another type or location")
        return None if inst.status in BOOTING else inst

    return c.wait_for(f"{host} to boot", check, c.cfg.ready_minutes)


def _wait_status(c: Cloud, host: str, status: str) -> Instance:
    return c.wait_for(f"{host} to be {status}", lambda: next(
        (i for i in [c.verda.find_instance(host)] if i is not None and i.status == status),
        None), c.cfg.ready_minutes)


def _attach_and_start(c: Cloud, slot: int) -> None:
    cfg = c.cfg
    host = state.hostname(cfg, slot)
    inst = _settled(c, host)
    _record(c, inst)  # a run killed between create and record left it unrecorded
    scratch = c.verda.find_volume(state.scratch_name(cfg, slot))
    sfs = c.verda.find_volume(state.sfs_name(cfg))
    if scratch is None or sfs is None:
        raise CloudError(f"a volume for {host} is missing; rerun day-start")
    todo = [v for v in (scratch, sfs) if inst.id not in v.instance_ids]
    if todo:
        if inst.status == "running":
            c.verda.action(inst.id, "shutdown")
            inst = _wait_status(c, host, "offline")
        for vol in todo:
            c.verda.attach(vol.id, inst.id)
    if inst.status == "offline":
        c.verda.action(inst.id, "start")
    _settled(c, host)


def _wait_registered(c: Cloud, host: str) -> None:
    window = c.settings.queue.online_window

    def check() -> bool | None:
        with transaction(c.factory) as s:
            return True if fleet.registered_since(s, [host], time.time() - window) else None

    c.wait_for(f"worker {host} to register with the hub", check, c.cfg.ready_minutes)


def day_end(c: Cloud, only: list[Instance] | None = None, backups: bool = True) -> Plan:
    """Drain, back up and verify, then delete the instances (all ours, or `only`)."""
    cfg = c.cfg
    instances = our_instances(c) if only is None else only
    hosts = [i.hostname for i in instances]
    plan = Plan("end the day" if only is None else f"remove {', '.join(hosts)}")
    if instances:
        plan.add(f"drain workers {', '.join(hosts)}: running jobs finish (up to "
                 f"{cfg.drain_minutes:g} min), queued ones wait in the hub",
                 lambda: _drain(c, hosts))
        for name in cfg.day_end_backups if backups else []:
            plan.add(f"back up and verify '{name}'", lambda name=name: _backup(c, name))
        for inst in instances:
            plan.add(f"delete instance {inst.hostname} and its OS disk (scratch and SFS stay)",
                     lambda inst=inst: _delete(c, inst.hostname))
    keep = [v for v in c.verda.volumes()
            if state.is_ours(cfg, v.name) and not v.is_os_volume]
    if keep and only is None:
        hourly = sum(v.price_per_hour for v in keep)
        plan.notes.append("Still billing after this: " + ", ".join(
            f"{v.name} ${v.price_per_hour:.4f}/h" for v in keep)
            + f"; ${hourly * _night_hours(c):.2f} per night ({_night_hours(c):g} h)")
    return plan


def _night_hours(c: Cloud) -> float:
    """From the timetable's day end to the next day start, else a 16 h night."""
    cfg = c.cfg
    if not (cfg.day_start and cfg.day_end):
        return NIGHT_HOURS
    minutes = [int(t[:2]) * 60 + int(t[3:]) for t in (cfg.day_end, cfg.day_start)]
    return ((minutes[1] - minutes[0]) % (24 * 60)) / 60 or 24.0


def _drain(c: Cloud, hosts: list[str]) -> None:
    with transaction(c.factory) as s:
        fleet.drain_named(s, hosts)

    def idle() -> bool | None:
        with transaction(c.factory) as s:
            return None if fleet.held_jobs(s, hosts) else True

    try:
        c.wait_for("running jobs to finish", idle, c.cfg.drain_minutes)
    except CloudError:
        with transaction(c.factory) as s:
            left = fleet.held_jobs(s, hosts)
        c.say(f"  {len(left)} job(s) still running after {c.cfg.drain_minutes:g} min: they go "
              "back to the queue when their lease runs out")


def _backup(c: Cloud, name: str) -> None:
    from comfymulti.ops.backup.backup import run_backup
    from comfymulti.ops.backup.s3 import ObjectStore
    from comfymulti.ops.backup.verify import verify

    why = ("; no instance was deleted (they keep running and billing): fix it and rerun "
           "'comfymulti cloud day-end --yes'")
    try:
        store = ObjectStore(c.settings.backup)
        report = run_backup(c.settings, name, store)
        checked = verify(store, name, c.settings.backup.concurrency, report.run)
    except ComfyMultiError as exc:
        raise CloudError(f"day-end stopped: backup '{name}' failed: {exc.message}{why}") from exc
    if checked.problems:
        raise CloudError(f"day-end stopped: backup '{name}' did not verify: "
                         f"{checked.problems[0]}{why}")
    c.say(f"  '{name}': run {report.run}, {report.files} files, verified")


def _delete(c: Cloud, host: str) -> None:
    inst = c.verda.find_instance(host)
    if inst is None:
        return
    inst = _settled(c, host, failed_ok=True)  # a provisioning one cannot be deleted yet
    _record(c, inst)
    doomed = [inst.os_volume_id] if inst.os_volume_id else []
    c.verda.action(inst.id, "delete", volume_ids=doomed)
    with transaction(c.factory) as s:
        state.ended(s, [inst.id, *doomed], c.verda.now())


def scale(c: Cloud, gpus: int) -> Plan:
    """Up: day-start with more slots. Down: drain and remove the highest slots (no backups:
    the day's backups run at day-end)."""
    current = our_instances(c)
    if gpus >= len(current):
        return day_start(c, gpus)
    extra = [i for i in current if state.slot_of(c.cfg, i.hostname) > gpus]
    return day_end(c, only=extra, backups=False)
