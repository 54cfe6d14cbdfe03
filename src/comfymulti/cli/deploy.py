"""`comfymulti deploy`: the nginx site and systemd units for this config, and how to install
them. Generated, so the paths in them are the ones this install and config really use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comfymulti.cli.console import out
from comfymulti.errors import ConfigError
from comfymulti.invocation import own_command, settings, state
from comfymulti.ops.deploy import nginx, systemd

SITE = "nginx-comfymulti.conf"
HUB_UNIT = "comfymulti-hub.service"
WORKER_UNIT = "comfymulti-worker.service"


def deploy(
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Folder to write the files into.", file_okay=False)] = Path("deploy"),
    nginx_version: Annotated[str | None, typer.Option(
        help="nginx version of the hub host (default: `nginx -v` here), e.g. 1.22.1.",
        show_default=False)] = None,
    http_only: Annotated[bool, typer.Option(
        "--http-only", help="Only the port-80 part (ACME challenges and redirect): to get the "
        "first certificate before the HTTPS part can load it.")] = False,
) -> None:
    """Write the nginx site and the systemd units of the hub and a worker for this config."""
    cfg = settings()
    if state.config_file is None:
        raise ConfigError("deploy needs a config file; create one with 'comfymulti init DIR' "
                          "and pass it with --config DIR/comfymulti.toml")
    config = state.config_file.resolve()
    version = nginx.parse_version(nginx_version) if nginx_version else nginx.installed_version()
    if nginx_version and version is None:
        raise ConfigError(f"--nginx-version {nginx_version!r}: expected a version like 1.22.1")
    site = nginx.Site.from_settings(cfg, version)
    install = systemd.Install(own_command(), config, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {SITE: nginx.render(site, str(config), tls=not http_only),
             HUB_UNIT: systemd.hub_unit(install), WORKER_UNIT: systemd.worker_unit(install)}
    for name, text in files.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    d = out_dir.resolve()
    http2 = "'http2 on;'" if site.http2_on else "'listen ... http2' (nginx before 1.25.1)"
    out.print(f"Wrote {d / SITE} ({http2}), {d / HUB_UNIT}, {d / WORKER_UNIT}.\n"
              "Install on the hub host (as root):\n"
              f"  install -m 644 {d / SITE} /etc/nginx/sites-available/comfymulti\n"
              "  ln -sf /etc/nginx/sites-available/comfymulti /etc/nginx/sites-enabled/\n"
              f"  mkdir -p {site.acme_webroot} && nginx -t && systemctl reload nginx\n"
              f"  install -m 644 {d / HUB_UNIT} /etc/systemd/system/\n"
              "  systemctl daemon-reload && systemctl enable --now comfymulti-hub\n"
              f"On each GPU machine: {d / WORKER_UNIT} into /etc/systemd/system/ and the token "
              f"in {systemd.WORKER_ENV_FILE}.", markup=False)
