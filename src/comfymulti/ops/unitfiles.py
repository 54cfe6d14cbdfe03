"""systemd unit text shared by every unit ComfyMulti writes (`deploy`, `node bootstrap`,
`backup install-timer`): one quoting rule for command lines, and one worker service."""

from __future__ import annotations

from comfymulti.errors import ConfigError


def quote(word: str, *, dollars: bool = False) -> str:
    """One quoted systemd word: escapes for \\ and ", %% for specifiers; on command lines $$
    (systemd expands $VAR there)."""
    escaped = (word.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("%", "%%"))
    return '"' + (escaped.replace("$", "$$") if dollars else escaped) + '"'


def command_line(executable: str, *args: str) -> str:
    """An ExecStart value. systemd takes the program's path literally and refuses quotes,
    backslashes, control characters and $ in it; the arguments may hold anything."""
    if any(ch in "\\\"'$" or not ch.isprintable() for ch in executable):
        raise ConfigError(f"{executable!r}: systemd cannot run a program whose path holds "
                          "quotes, backslashes, $ or control characters; move it")
    return " ".join([quote(executable), *(quote(a, dollars=True) for a in args)])


def worker_unit(header: str, description: str, command: list[str], *, after: str = "",
                service: str = "") -> str:
    """The GPU worker's service wherever it runs: stopping it drains (SIGTERM: no new jobs,
    prefetched ones go back to the hub, the running one may take up to 15 minutes to finish),
    and a crash restarts it. `after` names units to start first; `service` adds settings."""
    needs = f"network-online.target {after}".strip()
    return f"""{header}[Unit]
Description={description}
Wants={needs}
After={needs}

[Service]
{service}ExecStart={command_line(*command)}
KillSignal=SIGTERM
TimeoutStopSec=900
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"""
