"""`comfymulti node bootstrap`: make a fresh GPU machine a worker of the hub, in named steps.

Order matters: the machine's identity (SSH host keys, VPN keys, /etc/comfymulti) is restored
before any service that would make a new one starts, and the models are in place before
ComfyUI starts. Every step looks at the machine first and does only what is missing, so a rerun
after success changes nothing and a rerun after a failure picks up where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import httpx

from comfymulti.config import Settings
from comfymulti.errors import ComfyMultiError, NodeError, NotFound
from comfymulti.ops.backup.cache import Cache
from comfymulti.ops.backup.restore import LOCAL, REMOTE, RestoreReport, restore
from comfymulti.ops.backup.s3 import ObjectStore
from comfymulti.ops.backup.sources import get_set
from comfymulti.ops.node import comfyui, mounts, units
from comfymulti.ops.node.settings import NodeSettings
from comfymulti.ops.node.shell import run

log = logging.getLogger("comfymulti.node")

NODE_STATE = "node-state"
MODELS = "models"
SCRATCH_FOLDERS = ("input", "output", "temp")


@dataclass
class StepResult:
    name: str
    changed: bool
    outcome: str


@dataclass
class BootstrapReport:
    steps: list[StepResult] = field(default_factory=list)
    downloaded_bytes: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> list[str]:
        return [s.name for s in self.steps if s.changed]


class _Node:
    """One run's inputs and what the steps hand on to each other."""

    def __init__(self, settings: Settings, node: NodeSettings, config: Path,
                 store: ObjectStore | None, report: BootstrapReport) -> None:
        self.settings, self.node, self.config, self.report = settings, node, config, report
        self._store = store
        self.model_paths = settings.data_dir / "extra_model_paths.yaml"
        self.unit_state = units.UnitState(settings.data_dir / "node-units.json")

    @cached_property
    def units(self) -> dict[str, str]:
        return units.render(self.settings, self.node, self.config, self.model_paths)

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = ObjectStore(self.settings.backup)
        return self._store

    def restore(self, set_name: str, to: Path, tiers: list[Path]) -> RestoreReport | None:
        """Restore a set (None if it was never backed up); refused files fail the step."""
        cache = Cache(self.settings.backup_cache_dir / "cache.sqlite")
        try:
            found = restore(self.store, set_name, to, cache, self.settings.backup.concurrency,
                            tiers)
        except NotFound:
            return None
        finally:
            cache.close()
        if found.problems:
            raise NodeError(f"{len(found.problems)} file(s) of {set_name!r} refused; first: "
                            f"{found.problems[0]}")
        self.report.downloaded_bytes += found.bytes_from.get(REMOTE, 0)
        return found


def _sources(found: RestoreReport) -> str:
    parts = [f"{n} bytes from {'the backup' if src == REMOTE else src}"
             for src, n in sorted(found.bytes_from.items())]
    return f"{found.files} files: " + (", ".join(parts) or "none")


def _sfs(n: _Node) -> tuple[bool, str]:
    return mounts.ensure_sfs(Path(n.node.sfs_mount), n.node.sfs_source, Path(n.node.fstab))


def _scratch(n: _Node) -> tuple[bool, str]:
    scratch = Path(n.node.scratch_mount)
    changed, outcome = mounts.ensure_block(scratch, n.node.scratch_device, Path(n.node.fstab))
    for name in SCRATCH_FOLDERS:
        (scratch / name).mkdir(exist_ok=True)
    return changed, outcome


def _node_state(n: _Node) -> tuple[bool, str]:
    to = n.settings.backup_root(get_set(n.settings, NODE_STATE))
    found = n.restore(NODE_STATE, to, [])
    if found is None:
        return False, "no node-state backup yet: this machine keeps the identity it has"
    if set(found.bytes_from) - {LOCAL}:
        # sshd generated host keys at boot; make it present the restored ones.
        run([n.node.systemctl, "try-restart", "ssh.service"])
        return True, _sources(found) + "; ssh restarted with the restored host keys"
    return False, _sources(found)


def _models(n: _Node) -> tuple[bool, str]:
    target = n.node.models_path
    tiers = [] if target == n.node.sfs_models else [n.node.sfs_models]
    found = n.restore(MODELS, target, tiers)
    target.mkdir(parents=True, exist_ok=True)
    if found is None:
        return False, f"no models backup yet: ComfyUI uses what {target} holds"
    return bool(set(found.bytes_from) - {LOCAL}), _sources(found)


def _comfyui(n: _Node) -> tuple[bool, str]:
    installed, outcome = comfyui.ensure(n.node)
    models = n.node.models_path
    folders = {p.name: p.name for p in sorted(models.iterdir()) if p.is_dir()}
    text = json.dumps({"comfymulti": {"base_path": str(models), "is_default": True, **folders}},
                      indent=1) + "\n"
    if n.model_paths.exists() and n.model_paths.read_text() == text:
        return installed, f"{outcome}; model folders unchanged"
    n.model_paths.parent.mkdir(parents=True, exist_ok=True)
    n.model_paths.write_text(text)
    return True, f"{outcome}; model folders {', '.join(folders) or 'none'} in {n.model_paths}"


def _units(n: _Node) -> tuple[bool, str]:
    done = units.install(n.units, Path(n.node.unit_dir), n.node.systemctl, n.unit_state)
    return bool(done), "; ".join(done) or "unchanged"


def _services(n: _Node) -> tuple[bool, str]:
    done = units.start(n.units, n.node.systemctl, n.unit_state)
    return bool(done), "; ".join(done) or "running"


def _hub(n: _Node) -> tuple[bool, str]:
    """The worker registers itself; this proves the hub answers from this machine."""
    url = f"{n.settings.worker.hub_url.rstrip('/')}/health"
    deadline = time.monotonic() + n.node.hub_wait
    while True:
        try:
            answer = httpx.get(url, timeout=10)
            if answer.status_code == 200:
                return False, f"{url} answered: {answer.json().get('workers_online', '?')} " \
                              "worker(s) online"
            reason = f"HTTP {answer.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
        if time.monotonic() >= deadline:
            raise NodeError(f"the hub at {url} did not answer within {n.node.hub_wait:.0f} s "
                            f"({reason}); check worker.hub_url and the hub")
        time.sleep(min(2.0, max(0.1, n.node.hub_wait / 20)))


STEPS: tuple[tuple[str, Callable[[_Node], tuple[bool, str]]], ...] = (
    ("sfs", _sfs), ("scratch", _scratch), (NODE_STATE, _node_state), (MODELS, _models),
    ("comfyui", _comfyui), ("units", _units), ("services", _services), ("hub", _hub))


def bootstrap(settings: Settings, node: NodeSettings, config: Path,
              store: ObjectStore | None = None) -> BootstrapReport:
    """Run every step in order; the first that fails stops the run, named with its reason."""
    report = BootstrapReport()
    started = time.monotonic()
    n = _Node(settings, node, config, store, report)
    for name, step in STEPS:
        try:
            changed, outcome = step(n)
        except (ComfyMultiError, OSError) as exc:
            reason = exc.message if isinstance(exc, ComfyMultiError) else str(exc)
            raise NodeError(f"node bootstrap stopped at step {name!r}: {reason}; rerun "
                            "'comfymulti node bootstrap' once fixed (done steps are kept)"
                            ) from exc
        log.info("step %s: %s%s", name, "" if changed else "nothing to do: ", outcome)
        report.steps.append(StepResult(name, changed, outcome))
    report.seconds = round(time.monotonic() - started, 3)
    return report
