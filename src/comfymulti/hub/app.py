"""create_app(settings): the whole hub, built from its settings with no globals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware

from comfymulti import __version__
from comfymulti.blocking import Offload
from comfymulti.config import Settings, secret_key
from comfymulti.db import make_engine, migrate, session_factory, transaction
from comfymulti.events import EventBus
from comfymulti.group_commit import GroupCommit
from comfymulti.group_read import GroupRead
from comfymulti.hub import autopilot
from comfymulti.hub.api import (
    admin,
    admin_accounts,
    admin_templates,
    dashboard,
    health,
    jobs,
    templates,
    worker,
)
from comfymulti.hub.context import HubContext
from comfymulti.hub.services import users
from comfymulti.hub.services.auth import PasswordChecks
from comfymulti.hub.services.credentials import Credentials
from comfymulti.hub.web import errors, openapi
from comfymulti.hub.web.compression import GzipCache
from comfymulti.hub.web.ratelimit import RateLimiter
from comfymulti.hub.web.viewcache import ViewCache
from comfymulti.hub.workspaces import env_api, files_api, frontend, gallery, run_api, userdata, ws
from comfymulti.hub.workspaces.aliases import ApiAliases
from comfymulti.hub.workspaces.sockets import Sockets
from comfymulti.metrics import Metrics
from comfymulti.models import User
from comfymulti.ops.cloud import costs
from comfymulti.queue import fleet, store
from comfymulti.queue.catalogs import CatalogCache
from comfymulti.queue.service import JobQueue

log = logging.getLogger("comfymulti.hub")

# Threads doing database work for requests. SQLite has one writer at a time anyway; a few
# threads let reads go on while a write waits, without piling up hundreds of waiters.
DB_THREADS = 8
# Threads answering the job-list polls of open workspaces, apart from DB_THREADS: they only
# read, and must not wait for a thread behind submits that wait for the write lock.
POLL_THREADS = 4
# Threads that tell who is asking (a cached answer, one indexed read); apart from DB_THREADS.
AUTH_THREADS = 4
# Threads doing the GPU workers' other database work (registration, lease checks before an
# upload, commands), apart from DB_THREADS: a worker must not wait behind hundreds of
# participants' polls and submits for a thread. Their reports (events, outputs, completions)
# are written by the queue's group-commit thread.
WORKER_THREADS = 8
# Threads for password logins' database work (reading the users' rows, a new hash).
LOGIN_THREADS = 4


def build_context(settings: Settings) -> HubContext:
    """Open the database (migrating it) and build the services; no I/O beyond that."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _clear_staging(settings.data_dir / "tmp")
    engine = make_engine(settings.database_url)
    migrate(engine)
    factory = session_factory(engine)
    bus = EventBus()
    metrics = Metrics()
    run, work, logins = Offload(DB_THREADS), Offload(WORKER_THREADS), Offload(LOGIN_THREADS)
    queue = JobQueue(factory, settings.queue, settings.data_dir, bus, metrics,
                     CatalogCache(settings.queue.online_window), run, work)

    def users_named(names: list[str]) -> dict[str, User]:
        with transaction(factory) as s:
            return users.users_named(s, names)

    hub = HubContext(settings=settings, engine=engine, factory=factory, bus=bus,
                     metrics=metrics, queue=queue, secret=secret_key(settings),
                     login_limiter=RateLimiter(), run=run, work=work, polls=Offload(POLL_THREADS),
                     logins=logins, login_users=GroupRead(users_named, logins),
                     new_sessions=GroupCommit(factory),
                     probe=Offload(2),
                     job_lists=ViewCache(), job_pages=ViewCache(),
                     credentials=Credentials(engine, factory, AUTH_THREADS),
                     password_checks=PasswordChecks(os.cpu_count() or 2))

    def jobs_by_state() -> dict[str, int]:
        with transaction(factory) as s:
            return store.counts_by_state(s)

    def workers_online() -> int:
        with transaction(factory) as s:
            return fleet.online_count(s, hub.online_window)

    def cloud_costs() -> tuple[float, float]:
        with transaction(factory) as s:
            return costs.spend(s, time.time())

    metrics.watch(jobs_by_state, workers_online, cloud_costs)
    metrics.watch_backups(hub.backups)
    return hub


def _clear_staging(folder: Path, older_than: float = 3600.0) -> None:
    """Half-received uploads left by a crash; nothing refers to them, so they can go."""
    if not folder.is_dir():
        return
    cutoff = time.time() - older_than
    for path in folder.iterdir():
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)


def create_app(settings: Settings) -> FastAPI:
    hub = build_context(settings)
    pilot = autopilot.build(hub) if settings.cloud.auto else None
    sockets = Sockets(settings.hub.max_sockets_per_user, settings.hub.max_sockets_total)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.queue.notify.bind(asyncio.get_running_loop())
        hub.queue.on_start()
        reaper = asyncio.create_task(hub.queue.reaper(), name="lease-reaper")
        watch = asyncio.create_task(sockets.watch(hub), name="socket-recheck")
        lag = asyncio.create_task(hub.metrics.watch_loop(), name="loop-lag")
        activities = (hub.session_activity, hub.worker_activity)
        touch = [asyncio.create_task(a.keep_writing(hub.tx), name=f"{a.what}-activity")
                 for a in activities]
        auto = None if pilot is None else asyncio.create_task(
            autopilot.run(pilot, settings.cloud.auto_seconds), name="cloud-autopilot")
        log.info("hub ready at %s", settings.public_url, extra={"action": "start"})
        try:
            yield
        finally:
            reaper.cancel()
            watch.cancel()
            lag.cancel()
            for task in touch:
                task.cancel()
            if auto is not None:
                auto.cancel()
            hub.queue.notify.close()
            for activity in activities:
                with contextlib.suppress(Exception):  # informational; the hub stops anyway
                    await activity.write(hub.tx)
            hub.credentials.close()
            hub.engine.dispose()

    app = FastAPI(title="ComfyMulti hub", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=openapi.URL)
    app.state.hub = hub
    app.add_middleware(ApiAliases)
    # JSON answers made per request (job lists, settings, blueprints) gzipped when worth it;
    # answers already encoded (frontend files, object_info) and packed media pass as they are.
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=6)
    app.state.sockets = sockets
    app.state.gzip = GzipCache(settings.data_dir / "cache" / "gzip", Offload(1))
    # Routes are matched in this order, one by one (~5 µs each): the requests every open
    # workspace and GPU worker makes all the time (job-list polls, sockets, reports) first.
    for router in (health.router, worker.router, run_api.router, ws.router, jobs.router,
                   admin.router, admin_accounts.router, admin_templates.router,
                   dashboard.router, templates.router, frontend.router, env_api.router,
                   gallery.router, userdata.router, files_api.router):
        app.include_router(router)
    frontend.add_static_fallback(app.router)  # last: every API route wins over static files

    errors.install(app)
    openapi.install(app)
    return app
