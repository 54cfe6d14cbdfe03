"""The startup script Verda runs once on a new instance's first boot (ASCII only).

Placeholder until node bootstrap lands: it only installs ComfyMulti and runs
`comfymulti node bootstrap` with the hub's address and this node's worker token."""

from __future__ import annotations

import shlex

from comfymulti.config import Settings


def startup_script(settings: Settings, worker_token: str) -> str:
    env = (f"COMFYMULTI_WORKER__HUB_URL={shlex.quote(settings.public_url)} "
           f"COMFYMULTI_WORKER__TOKEN={shlex.quote(worker_token)}")
    return ("#!/bin/bash\nset -euo pipefail\npip install comfymulti\n"
            f"{env} comfymulti node bootstrap\n")
