"""Optional: run ComfyUI as the worker's child and restart it when it dies.

On a rented GPU machine the worker can own ComfyUI instead of a separate service: `main.py
--listen 127.0.0.1 --port P` is started in ComfyUI's folder, its output goes to a log file, and
a crash is followed by a restart after a growing pause (1 s … 60 s, back to 1 s after it has run
for a while). The agent notices the restart through the socket and asks the hub to retry the job
that was lost with it. ComfyUI runs in its own session so a Ctrl-C meant for the worker (which
drains) does not kill the job ComfyUI is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from comfymulti.errors import ConfigError

log = logging.getLogger("comfymulti.worker.supervisor")

_STABLE_SECONDS = 60.0
_MAX_BACKOFF = 60.0


# Where ComfyUI's own environment usually is, next to its main.py.
_VENV_PYTHONS = ("venv/bin/python", ".venv/bin/python", "python_embeded/python")


def comfyui_python(directory: Path, explicit: Path | None = None) -> str:
    """The interpreter for ComfyUI: --comfyui-python, else a venv next to main.py, else the
    worker's own (which then needs ComfyUI's requirements installed)."""
    if explicit is not None:
        return str(explicit)
    for candidate in _VENV_PYTHONS:
        if (directory / candidate).is_file():
            return str(directory / candidate)
    log.warning("no venv in %s (looked for %s); running ComfyUI with the worker's Python %s "
                "(pass --comfyui-python to choose)", directory, ", ".join(_VENV_PYTHONS),
                sys.executable)
    return sys.executable


class Supervisor:
    def __init__(self, directory: Path, *, port: int, extra_args: list[str] | None = None,
                 log_path: Path | None = None, python: str = sys.executable,
                 listen: str = "127.0.0.1", first_backoff: float = 1.0) -> None:
        if not (directory / "main.py").is_file():
            raise ConfigError(f"{directory}: no main.py; --launch-comfyui needs ComfyUI's folder")
        self.directory = directory
        self.command = [python, "main.py", "--listen", listen, "--port", str(port),
                        *(extra_args or [])]
        self.log_path = log_path or directory / "comfyui-worker.log"
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.first_backoff = first_backoff
        self._stopping = False

    async def run(self) -> None:
        """Keep ComfyUI running until `stop`."""
        loop = asyncio.get_running_loop()
        backoff = self.first_backoff
        while not self._stopping:
            started = loop.time()
            code = await self._run_once()
            if self._stopping:
                return
            ran = loop.time() - started
            if ran >= _STABLE_SECONDS:
                backoff = self.first_backoff
            log.warning("ComfyUI exited with %s after %.0f s; restarting in %.0f s", code, ran,
                        backoff)
            await asyncio.sleep(backoff)  # restart backoff
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _run_once(self) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self.command, cwd=self.directory, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            self.starts += 1
            log.info("ComfyUI started (pid %d, log %s)", self.process.pid, self.log_path)
            try:
                return await self.process.wait()
            except asyncio.CancelledError:  # never leave ComfyUI behind
                await self.stop(5.0)
                raise

    async def stop(self, timeout: float = 20.0) -> None:
        """Ask ComfyUI to exit (SIGTERM), kill it if it does not within `timeout`."""
        self._stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
