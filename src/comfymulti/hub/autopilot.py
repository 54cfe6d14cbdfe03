"""[cloud] auto = true: the hub runs the cloud autopilot (timetable, idle end, autoscale).

Each look runs in a thread of its own, one at a time: a day-start waits minutes for workers
to register, which must block neither the event loop nor the request threads."""

from __future__ import annotations

import asyncio
import logging

from comfymulti.hub.context import HubContext
from comfymulti.ops.cloud.auto import Autopilot
from comfymulti.ops.cloud.plan import Cloud
from comfymulti.ops.cloud.verda import Verda

log = logging.getLogger("comfymulti.cloud.auto")


def build(hub: HubContext) -> Autopilot:
    """Refuses at start (one line, ConfigError) when the cloud credentials are missing."""
    settings = hub.settings
    return Autopilot(Cloud(settings, Verda(settings.cloud), hub.factory, log.info))


async def run(pilot: Autopilot, every: float) -> None:
    while True:
        await asyncio.to_thread(pilot.tick)
        await asyncio.sleep(every)
