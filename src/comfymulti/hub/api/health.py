"""Public on purpose: /health for load balancers and people, /metrics for Prometheus."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from comfymulti.db import transaction
from comfymulti.hub.context import HubContext
from comfymulti.hub.web.access import get_hub
from comfymulti.queue import fleet, store

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(hub: HubContext = Depends(get_hub)) -> Response:
    body: dict[str, Any] = {"status": "ok", "db": "ok"}
    try:
        with transaction(hub.factory) as s:
            s.execute(text("SELECT 1"))
            body["workers_online"] = fleet.online_count(s, hub.online_window)
            body["queue_depth"] = store.count_queued(s)
    except SQLAlchemyError as exc:
        body.update(status="error", db=f"error: {type(exc).__name__}")
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(hub: HubContext = Depends(get_hub)) -> Response:
    return Response(generate_latest(hub.metrics.registry), media_type=CONTENT_TYPE_LATEST)
