"""/admin: the organiser's dashboard page, its script and styles, and its live channel.

The page is server-rendered (panels, forms, labels); its small script fills the tables from
/admin/ws, which sends the whole view (services/dashboard.py) when the page opens and again
whenever the queue, the workers, the accounts or the templates change, at most once per
COALESCE and at least every dashboard.TICK. Admins act through /admin/api; instructors get the
same view read-only (the actions are not shown, and /admin/api refuses them).
"""

from __future__ import annotations

import asyncio
import html
import logging
import string
import uuid
from pathlib import Path

from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from comfymulti import __version__
from comfymulti.errors import NotFound, Unauthorized
from comfymulti.hub.context import HubContext
from comfymulti.hub.services import dashboard
from comfymulti.hub.web.access import (
    get_hub,
    require_instructor,
    user_of,
)
from comfymulti.hub.workspaces.sockets import Sockets
from comfymulti.models import User

log = logging.getLogger("comfymulti.hub")

router = APIRouter(tags=["admin"])

ASSETS = Path(__file__).resolve().parents[1] / "static" / "admin"
_FILES = {"admin.js": "text/javascript", "admin.css": "text/css"}
# A burst of changes (a batch submit, twenty registrations) becomes one view.
COALESCE = 0.25


@router.get("/admin", include_in_schema=False)
async def page(request: Request, hub: HubContext = Depends(get_hub)) -> Response:
    """The dashboard; a visitor who is not logged in is sent to the login page first."""
    try:
        me = await user_of(request, hub)
    except Unauthorized:
        return RedirectResponse("/?next=/admin", status_code=303)
    await require_instructor(me)
    text = string.Template((ASSETS / "index.html").read_text()).substitute(
        user=html.escape(me.name), role=html.escape(me.role), version=__version__,
        workspace=html.escape(f"/u/{me.name}/"))
    return HTMLResponse(text, headers={"Cache-Control": "no-store"})


@router.get("/admin/static/{name}", include_in_schema=False)
async def asset(name: str, _staff: User = Depends(require_instructor)) -> FileResponse:
    if name not in _FILES:
        raise NotFound("no such file")
    return FileResponse(ASSETS / name, media_type=_FILES[name],
                        headers={"Cache-Control": "no-cache"})


@router.websocket("/admin/ws")
async def live(websocket: WebSocket) -> None:
    """The dashboard's view, pushed on every change; refused (403) to participants."""
    hub: HubContext = websocket.app.state.hub
    sockets: Sockets = websocket.app.state.sockets
    sid = f"admin-{uuid.uuid4().hex}"
    if (entered := await sockets.enter(websocket, hub, sid, require_instructor)) is None:
        return
    me, _ = entered
    try:
        await websocket.accept()
        reader = asyncio.create_task(_until_closed(websocket))
        try:
            while not reader.done():
                changed = asyncio.create_task(hub.queue.notify.dashboards.wait())
                try:
                    view = await hub.run(dashboard.snapshot, hub)
                    await websocket.send_json({"type": "snapshot", "data": view})
                except SQLAlchemyError:  # a busy database: the next change or tick retries
                    log.warning("dashboard view not sent", exc_info=True)
                await asyncio.wait({changed, reader}, timeout=dashboard.TICK,
                                   return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                await asyncio.sleep(COALESCE)
        finally:
            reader.cancel()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        await sockets.release(me.id, sid, websocket)


async def _until_closed(websocket: WebSocket) -> None:
    """The page sends nothing; this notices when it goes away."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
