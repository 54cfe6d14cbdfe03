"""What this process's command line chose (config file, verbosity), for every command.

The root `comfymulti` callback fills it in; the hub, worker and ops commands read settings
through it, so none of them imports the CLI module (cli.py imports them).
"""

from __future__ import annotations

import os
import pwd
import shlex
import sys
from pathlib import Path

from comfymulti.config import CONFIG_ENV, CONFIG_NAME, Settings, find_config, load_settings
from comfymulti.errors import ConfigError


class Invocation:
    config: Path | None = None
    verbose: bool = False
    settings: Settings | None = None
    config_file: Path | None = None  # the file the settings came from (None: defaults)


state = Invocation()

LOOKED_FOR = f"--config FILE, ${CONFIG_ENV}, ./{CONFIG_NAME}"


def settings() -> Settings:
    """The settings of this run, loaded once: --config, $COMFYMULTI_CONFIG, ./comfymulti.toml,
    else the embedded defaults. Unless --config named the file, one line on stderr says which
    config and data folder were used, so a command run from the wrong folder is noticed."""
    if state.settings is None:
        path = find_config(state.config)
        state.settings = load_settings(path)
        state.config_file = path
        if state.config is None:
            sys.stderr.write(f"{_where(path)}; data: {state.settings.data_dir}\n")
    return state.settings


def _where(path: Path | None) -> str:
    if path is None:
        return f"config: none found ({LOOKED_FOR}), embedded defaults"
    origin = f"${CONFIG_ENV}" if os.environ.get(CONFIG_ENV) else "this folder"
    return f"config: {path.resolve()} (from {origin})"


def require_database(database_file: Path | None) -> None:
    """Refuse to start an empty database when no config file was found: the command was most
    likely run from another folder than the workshop's."""
    if state.config_file is None and database_file is not None and not database_file.exists():
        raise ConfigError(
            f"no config found ({LOOKED_FOR}) and no database at {database_file}; point at "
            f"yours with 'comfymulti --config /path/{CONFIG_NAME} ...' or "
            f"'export {CONFIG_ENV}=/path/{CONFIG_NAME}', or create one with "
            "'comfymulti init DIR'")


def own_command() -> list[str]:
    """How to run this install's `comfymulti` (its console script, else `python -m`)."""
    script = Path(sys.executable).parent / "comfymulti"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "comfymulti"]


def refuse_root_in_service_folder(folder: Path) -> None:
    """Run as root, refuse to write into a folder another user (the service user) owns: the
    hub running as that user could not read what root leaves there. Say what to run instead."""
    if os.geteuid() != 0:
        return
    existing = folder.resolve()
    while not existing.exists():
        existing = existing.parent
    owner = existing.stat().st_uid
    if owner == 0:
        return
    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = str(owner)
    again = shlex.join([*own_command(), *sys.argv[1:]])
    raise ConfigError(f"{existing} belongs to {name}: run this as {name} so the hub can use "
                      f"what it writes: runuser -u {name} -- {again}")
