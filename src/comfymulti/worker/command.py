"""`comfymulti worker`: run a GPU worker in the foreground (SIGTERM drains, then exits 0)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from comfymulti.errors import ConfigError
from comfymulti.invocation import settings, state

log = logging.getLogger("comfymulti.worker")


def worker(
    hub: Annotated[str | None, typer.Option(
        "--hub", help="Hub URL (config: worker.hub_url).", show_default=False)] = None,
    token: Annotated[str | None, typer.Option(
        "--token", help="Worker token (config: worker.token, env COMFYMULTI_WORKER__TOKEN).",
        show_default=False)] = None,
    comfyui: Annotated[str | None, typer.Option(
        "--comfyui", help="The local ComfyUI's URL (config: worker.comfyui_url).",
        show_default=False)] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="Name shown to the admin (config: worker.name; default: host name).",
        show_default=False)] = None,
    prefetch: Annotated[int | None, typer.Option(
        "--prefetch", help="Jobs queued in ComfyUI behind the running one "
        "(config: worker.prefetch).", show_default=False)] = None,
    launch_comfyui: Annotated[Path | None, typer.Option(
        "--launch-comfyui", help="Start ComfyUI's main.py from this folder and restart it "
        "when it exits; arguments after -- go to it.", show_default=False)] = None,
    comfyui_python: Annotated[Path | None, typer.Option(
        "--comfyui-python", help="Python of ComfyUI's environment for --launch-comfyui "
        "(default: DIR/venv or DIR/.venv if present, else the worker's).", exists=True,
        dir_okay=False, show_default=False)] = None,
    ca: Annotated[Path | None, typer.Option(
        "--ca", help="CA bundle (PEM) that signed the hub's certificate, for a private CA or "
        "a self-signed hub.", exists=True, dir_okay=False, readable=True,
        show_default=False)] = None,
    comfyui_log: Annotated[Path | None, typer.Option(
        "--comfyui-log", help="Log file for a launched ComfyUI (default: DIR/comfyui-worker.log).",
        show_default=False)] = None,
    comfyui_args: Annotated[list[str] | None, typer.Argument(
        help="Extra arguments for ComfyUI's main.py (with --launch-comfyui).",
        show_default=False)] = None,
) -> None:
    """Serve the hub's jobs with the local ComfyUI until SIGTERM (drains, then exits 0)."""
    from comfymulti import log as logsetup

    cfg = settings().worker
    hub_url = (hub or cfg.hub_url).rstrip("/")
    comfy_url = (comfyui or cfg.comfyui_url).rstrip("/")
    secret = token or cfg.token.get_secret_value()
    for label, url in (("hub URL", hub_url), ("ComfyUI URL", comfy_url)):
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ConfigError(f"{label} {url!r} must be an http(s):// URL")
    if not secret:
        raise ConfigError("no worker token: pass --token or set worker.token "
                          "(create one with 'comfymulti workers token --name NAME' on the hub)")
    depth = cfg.prefetch if prefetch is None else prefetch
    if not 0 <= depth <= 8:
        raise ConfigError(f"--prefetch must be between 0 and 8, not {depth}")
    if (comfyui_args or comfyui_python) and launch_comfyui is None:
        raise ConfigError("extra ComfyUI arguments and --comfyui-python need "
                          "--launch-comfyui DIR")
    logsetup.setup(state.verbose)
    if not state.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(_serve(hub_url, secret, comfy_url, name or cfg.name or socket.gethostname(),
                       depth, cfg.preview_fps, launch_comfyui, comfyui_log,
                       list(comfyui_args or []), ca, comfyui_python))


async def _serve(hub_url: str, token: str, comfy_url: str, name: str, prefetch: int,
                 preview_fps: float, launch: Path | None, launch_log: Path | None,
                 launch_args: list[str], ca: Path | None, python: Path | None) -> None:
    from comfymulti.worker.agent import Agent
    from comfymulti.worker.comfyui import ComfyUIClient
    from comfymulti.worker.hub_client import HubClient
    from comfymulti.worker.supervisor import Supervisor, comfyui_python

    supervisor = None
    if launch is not None:
        port = urlsplit(comfy_url).port or 8188
        folder = launch.resolve()
        supervisor = Supervisor(folder, port=port, extra_args=launch_args, log_path=launch_log,
                                python=comfyui_python(folder, python))
    hub = HubClient(hub_url, token, ca_bundle=str(ca) if ca else None)
    comfy = ComfyUIClient(comfy_url)
    agent = Agent(hub, comfy, name=name, prefetch=prefetch, preview_fps=preview_fps)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    supervising = asyncio.create_task(supervisor.run()) if supervisor else None

    def on_signal() -> None:
        if agent.serving:
            agent.drain()
        elif main is not None:  # still waiting for ComfyUI: nothing to finish
            main.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    log.info("worker %s: hub %s, ComfyUI %s, prefetch %d", name, hub_url, comfy_url, prefetch)
    try:
        await agent.run()
    except asyncio.CancelledError:
        log.info("stopped before serving any job")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if supervisor is not None and supervising is not None:
            await supervisor.stop()
            supervising.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervising
        await hub.aclose()
        await comfy.aclose()
