"""What this process's command line chose (config file, verbosity), for every command.

The root `comfymulti` callback fills it in; the hub, worker and ops commands read settings
through it, so none of them imports the CLI module (cli.py imports them).
"""

from __future__ import annotations

from pathlib import Path

from comfymulti.config import Settings, find_config, load_settings


class Invocation:
    config: Path | None = None
    verbose: bool = False
    settings: Settings | None = None


state = Invocation()


def settings() -> Settings:
    """The settings of this run, loaded once: --config, $COMFYMULTI_CONFIG, ./comfymulti.toml,
    else the embedded defaults."""
    if state.settings is None:
        state.settings = load_settings(find_config(state.config))
    return state.settings
