"""Commands run on a GPU machine itself (by its startup script, or by hand)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from comfymulti.cli.console import JsonOption, print_report
from comfymulti.ops.node.settings import NodeSettings

node_app = typer.Typer(help="Commands run on a GPU machine.", no_args_is_help=True)


def _option(name: str) -> Any:
    """A --flag for a NodeSettings field, its help taken from the field."""
    info = NodeSettings.model_fields[name]
    return typer.Option(f"--{name.replace('_', '-')}", help=info.description,
                        show_default=str(info.default) or "none")


@node_app.command("bootstrap")
def bootstrap_cmd(
    sfs_mount: Annotated[str | None, _option("sfs_mount")] = None,
    scratch_mount: Annotated[str | None, _option("scratch_mount")] = None,
    sfs_source: Annotated[str | None, _option("sfs_source")] = None,
    scratch_device: Annotated[str | None, _option("scratch_device")] = None,
    models_dir: Annotated[str | None, _option("models_dir")] = None,
    comfyui_dir: Annotated[str | None, _option("comfyui_dir")] = None,
    comfyui_python: Annotated[str | None, _option("comfyui_python")] = None,
    comfyui_repo: Annotated[str | None, _option("comfyui_repo")] = None,
    comfyui_ref: Annotated[str | None, _option("comfyui_ref")] = None,
    fstab: Annotated[str | None, _option("fstab")] = None,
    unit_dir: Annotated[str | None, _option("unit_dir")] = None,
    systemctl: Annotated[str | None, _option("systemctl")] = None,
    hub_wait: Annotated[float | None, _option("hub_wait")] = None,
    as_json: JsonOption = False,
) -> None:
    """Mount SFS and scratch, restore node-state and models, start ComfyUI and the worker,
    check the hub. Each step does only what is missing: rerun it after a failure."""
    from pydantic import ValidationError

    from comfymulti import log
    from comfymulti.config import find_config
    from comfymulti.errors import ConfigError
    from comfymulti.invocation import settings, state
    from comfymulti.ops.node.bootstrap import bootstrap

    given = {k: v for k, v in locals().items()
             if k in NodeSettings.model_fields and v is not None}
    config = find_config(state.config)
    if config is None:
        raise ConfigError("node bootstrap needs the node's config file: pass --config "
                          "(the startup script writes STATE_DIR/comfymulti.toml)")
    log.setup(state.verbose)
    try:
        node = NodeSettings(**given)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise ConfigError(f"--{str(problem['loc'][0]).replace('_', '-')}: {problem['msg']}"
                          ) from None
    report = bootstrap(settings(), node, config.resolve())
    lines = [f"{s.name}: {s.outcome}" for s in report.steps]
    changed = ", ".join(report.changed) or "nothing"
    print_report(report, as_json, "\n".join([*lines, f"node ready in {report.seconds:.1f} s; "
                                             f"changed: {changed}; "
                                             f"{report.downloaded_bytes} bytes downloaded"]))
