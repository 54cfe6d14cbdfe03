"""/health for load balancers and people (public on purpose); /metrics for Prometheus, public
unless hub.metrics_token or hub.metrics_networks restrict it."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from comfymulti.db import BUSY_TIMEOUT_MS
from comfymulti.errors import Forbidden, Unavailable
from comfymulti.hub.context import HubContext
from comfymulti.hub.web.access import client_address, get_hub
from comfymulti.queue import fleet, store

router = APIRouter(tags=["health"])

# /health answers within this time whatever the database does; a probe that cannot write in
# time reports the database as not writable.
DEADLINE = 0.08
_PROBE_BUSY_MS = 50


def _probe(hub: HubContext) -> dict[str, Any]:
    """Write one row (the truth about writability), then read the counts; in a thread, on a
    connection that waits for another writer only briefly."""
    with hub.engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={_PROBE_BUSY_MS}")
        try:
            with Session(conn) as s:
                store.set_state(s, "health_probe", f"{time.time():.3f}")
                s.flush()
                found = {"workers_online": fleet.online_count(s, hub.online_window),
                         "queue_depth": store.count_queued(s)}
                s.commit()
            return found
        except OperationalError:
            raise Unavailable("the database is not writable") from None
        finally:
            conn.rollback()
            if sqlite:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


@router.get("/health")
async def health(hub: HubContext = Depends(get_hub)) -> Response:
    body: dict[str, Any] = {"status": "ok", "db": "ok", "backups": {
        name: asdict(row) for name, row in hub.backups().items()}}
    try:
        body.update(await asyncio.wait_for(hub.probe(_probe, hub), DEADLINE))
    except (TimeoutError, Unavailable):
        body.update(status="degraded", db="not writable: busy or locked")
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    except SQLAlchemyError as exc:
        body.update(status="error", db=f"error: {type(exc).__name__}")
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


def _may_read_metrics(request: Request, hub: HubContext) -> None:
    """Anyone when neither a token nor networks are configured; else a caller inside one of
    hub.metrics_networks (the client address, behind trusted proxies) or with the token."""
    cfg = hub.settings.hub
    token = cfg.metrics_token.get_secret_value()
    if not token and not cfg.metrics_networks:
        return
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        address = None
    networks = (ipaddress.ip_network(n, strict=False) for n in cfg.metrics_networks)
    if address is not None and any(address in network for network in networks):
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(value.encode(),
                                                                     token.encode()):
        return
    raise Forbidden("/metrics is restricted (hub.metrics_token, hub.metrics_networks)")


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, hub: HubContext = Depends(get_hub)) -> Response:
    _may_read_metrics(request, hub)
    return Response(generate_latest(hub.metrics.registry), media_type=CONTENT_TYPE_LATEST)
