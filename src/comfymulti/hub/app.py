"""create_app(settings): the whole hub, built from its settings with no globals."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from comfymulti.config import Settings, secret_key
from comfymulti.db import make_engine, migrate, session_factory, transaction
from comfymulti.errors import ComfyMultiError, error_body
from comfymulti.hub import admin, health, jobs_api, templates_api, worker_api, workers
from comfymulti.hub.context import HubContext
from comfymulti.hub.events import EventBus
from comfymulti.hub.ratelimit import RateLimiter
from comfymulti.hub.workspaces import env_api, files_api, frontend, run_api, userdata, ws
from comfymulti.hub.workspaces.aliases import ApiAliases
from comfymulti.hub.workspaces.ws import Sockets
from comfymulti.metrics import Metrics
from comfymulti.queue import store
from comfymulti.queue.service import CatalogCache, JobQueue

log = logging.getLogger("comfymulti.hub")


def build_context(settings: Settings) -> HubContext:
    """Open the database (migrating it) and build the services; no I/O beyond that."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _clear_staging(settings.data_dir / "tmp")
    engine = make_engine(settings.database_url)
    migrate(engine)
    factory = session_factory(engine)
    bus = EventBus()
    metrics = Metrics()
    queue = JobQueue(factory, settings.queue, settings.data_dir, bus, metrics,
                     CatalogCache(settings.queue.online_window))
    hub = HubContext(settings=settings, engine=engine, factory=factory, bus=bus,
                     metrics=metrics, queue=queue, secret=secret_key(settings),
                     login_limiter=RateLimiter(max_failures=10, window=300.0))

    def jobs_by_state() -> dict[str, int]:
        with transaction(factory) as s:
            return store.counts_by_state(s)

    def workers_online() -> int:
        with transaction(factory) as s:
            return workers.online_count(s, hub.online_window)

    metrics.watch(jobs_by_state, workers_online)
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.queue.on_start()
        reaper = asyncio.create_task(hub.queue.reaper(), name="lease-reaper")
        log.info("hub ready at %s", settings.public_url, extra={"action": "start"})
        try:
            yield
        finally:
            reaper.cancel()
            hub.engine.dispose()

    app = FastAPI(title="ComfyMulti hub", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.hub = hub
    app.add_middleware(ApiAliases)
    app.state.sockets = Sockets()
    for router in (health.router, worker_api.router, jobs_api.router, admin.router,
                   templates_api.router,
                   frontend.router, env_api.router, run_api.router, ws.router,
                   userdata.router, files_api.router):
        app.include_router(router)
    frontend.add_static_fallback(app.router)  # last: every API route wins over static files

    @app.exception_handler(ComfyMultiError)
    async def _ours(_request: Request, exc: ComfyMultiError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Basic realm="ComfyMulti"'} if exc.status_code == 401 \
            else None
        return JSONResponse(error_body(exc), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(
            {"error": {"type": "invalid_input", "message": f"{where}: {first.get('msg', '')}"}},
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": {"type": kind, "message": str(exc.detail)}},
                            status_code=exc.status_code)

    return app
