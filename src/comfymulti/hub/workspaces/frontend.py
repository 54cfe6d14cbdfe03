"""Login, logout, and the official ComfyUI frontend (PyPI comfyui-frontend-package, unmodified)
served under /u/<user>/ for its owner."""

from __future__ import annotations

import html
import mimetypes
import re
from pathlib import Path
from urllib.parse import quote

import comfyui_frontend_package
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from comfymulti import __version__
from comfymulti.errors import NotFound, Unauthorized
from comfymulti.hub.context import HubContext
from comfymulti.hub.services import sessions, templates
from comfymulti.hub.services.auth import token_hash
from comfymulti.hub.web import sessions as web_sessions
from comfymulti.hub.web.access import (
    Credential,
    authenticate,
    check_password,
    client_address,
    get_hub,
    is_admin,
    workspace_owner,
)
from comfymulti.hub.web.compression import accepts_gzip, is_fresh
from comfymulti.hub.web.ratelimit import TooManyAttempts
from comfymulti.hub.workspaces import userdata
from comfymulti.models import User
from comfymulti.userfiles import USER_NAME

STATIC = Path(comfyui_frontend_package.__file__).with_name("static")
OWN_STATIC = Path(__file__).resolve().parents[1] / "static"
ADMIN_PAGE = "/admin"
FRONTEND = f"frontend-{comfyui_frontend_package.__version__}"  # namespaces of compressed copies
OWN = f"comfymulti-{__version__}"
# Vite's content-hashed build files (`GraphView-Bt0QZMwI.js`): a new build has new names.
HASHED = re.compile(r"^assets/.+-[A-Za-z0-9_-]{8}\.[A-Za-z0-9]+$")
IMMUTABLE = "public, max-age=31536000, immutable"
# Top-level names that are ours; any other /<name>/ is a predecessor-style workspace URL.
RESERVED = {"u", "api", "admin", "worker", "health", "metrics", "login", "logout", "assets",
            "static", "favicon.ico"}

router = APIRouter(tags=["workspace"])

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ComfyMulti - log in</title><style>
body {{ font-family: system-ui, sans-serif; background: #202020; color: #eee; display: grid;
  place-items: center; min-height: 100vh; margin: 0; }}
form {{ background: #2b2b2b; padding: 2rem; border-radius: 10px; width: 18rem; }}
h1 {{ font-size: 1.3rem; margin: 0 0 1rem; }} label {{ display: block; margin: .6rem 0 .2rem; }}
input {{ width: 100%; box-sizing: border-box; padding: .5rem; border-radius: 5px;
  border: 1px solid #555; background: #1a1a1a; color: #eee; font-size: 1rem; }}
button {{ margin-top: 1.2rem; width: 100%; padding: .6rem; border: 0; border-radius: 5px;
  background: #3b82f6; color: white; font-size: 1rem; cursor: pointer; }}
.error {{ color: #f87171; margin: .5rem 0 0; }}
</style></head><body><form method="post" action="{action}">
<h1>ComfyMulti</h1>
<label for="username">User</label>
<input id="username" name="username" autocomplete="username" required autofocus value="{name}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<input type="hidden" name="next" value="{next}">
<button type="submit">Log in</button>{error}
</form></body></html>"""


def _login_page(error: str = "", name: str = "", next_url: str = "", status: int = 200
                ) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(
        action="login", name=html.escape(name), next=html.escape(next_url),
        error=f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""),
        status_code=status, headers={"Cache-Control": "no-store"})


def _safe_next(next_url: str, user: User) -> str:
    """Only a path inside the user's own workspace (or an admin's dashboard); never an
    outside URL. Without one, admins land on the dashboard, everyone else in their
    workspace."""
    home = f"/u/{user.name}/"
    if "//" not in next_url and "\\" not in next_url and (
            next_url.startswith(home) or (is_admin(user) and next_url == ADMIN_PAGE)):
        return next_url
    return ADMIN_PAGE if is_admin(user) else home


async def _session_user(request: Request, hub: HubContext) -> User | None:
    try:
        return await authenticate(hub, request.headers, request.cookies,
                                  client_address(request))
    except Unauthorized:
        return None


@router.get("/", include_in_schema=False)
async def index(request: Request, next: str = "", hub: HubContext = Depends(get_hub)
                ) -> Response:
    user = await _session_user(request, hub)
    if user is not None:
        return RedirectResponse(_safe_next(next, user), status_code=303)
    return _login_page(next_url=next)


@router.post("/login", include_in_schema=False)
async def login(request: Request, username: str = Form(""), password: str = Form(""),
                next: str = Form(""), hub: HubContext = Depends(get_hub)) -> Response:
    try:
        user = await check_password(hub, username.strip(), password, client_address(request))
    except TooManyAttempts as exc:
        return _login_page(exc.message, username, next, status=429)
    except Unauthorized:
        return _login_page("Wrong user name or password.", username, next, status=401)
    # Logins made together start their sessions in one transaction (one each: ~2.4 s queued
    # for the write lock in a 300-login rush).
    cookie = await hub.new_sessions(lambda s, _after: sessions.start(s, user))
    response = RedirectResponse(_safe_next(next, user), status_code=303)
    web_sessions.set_cookie(response, cookie, hub.settings.public_url.startswith("https:"))
    return response


@router.api_route("/logout", methods=["GET", "POST"], include_in_schema=False)
async def logout(request: Request, hub: HubContext = Depends(get_hub)) -> Response:
    """Ends the session on the server too, and closes the sockets opened with it."""
    if cookie := request.cookies.get(web_sessions.COOKIE):
        await hub.tx(lambda s: sessions.end(s, cookie))
        await request.app.state.sockets.close_credential(
            Credential("session", token_hash(cookie)))
    response = RedirectResponse("/", status_code=303)
    web_sessions.clear_cookie(response)
    return response


async def _static_file(request: Request, namespace: str, root: Path, rel: str,
                       cache_control: str | None = None) -> Response:
    """A file under `root`, gzipped from the once-made copy when the browser accepts it;
    hashed assets cached for good, everything else revalidated by ETag (304)."""
    root = root.resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise NotFound("no such file")
    rel = target.relative_to(root).as_posix()
    packed = (await request.app.state.gzip.get(namespace, root, rel)
              if accepts_gzip(request.headers) else None)
    sent = packed or target
    stat = sent.stat()
    headers = {"Cache-Control": cache_control or (IMMUTABLE if HASHED.match(rel) else "no-cache"),
               "Vary": "Accept-Encoding", "ETag": f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'}
    if is_fresh(request.headers, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    if packed is not None:
        headers["Content-Encoding"] = "gzip"
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(sent, media_type=media_type, headers=headers)


# The frontend builds a few URLs from the site root; serve them so nothing 404s.
@router.get("/assets/favicon.ico", include_in_schema=False)
@router.get("/assets/images/{rest:path}", include_in_schema=False)
async def root_icons(request: Request) -> Response:
    return await _static_file(request, FRONTEND, STATIC, request.url.path.lstrip("/"))


@router.get("/u/{user}", include_in_schema=False)
async def workspace_slash(user: str) -> Response:
    return RedirectResponse(f"/u/{quote(user)}/", status_code=307)


@router.get("/u/{user}/", include_in_schema=False)
async def workspace(request: Request, user: str, hub: HubContext = Depends(get_hub)
                    ) -> Response:
    me = await _session_user(request, hub)
    if me is None:
        return RedirectResponse(f"/?next={quote(f'/u/{user}/')}", status_code=303)
    await workspace_owner(user, me)
    if "template" not in request.query_params and (start := _first_workflow(hub, me)):
        return RedirectResponse(f"/u/{quote(user)}/?template={start}", status_code=303)
    return await _static_file(request, FRONTEND, STATIC, "index.html", "no-store")


def _first_workflow(hub: HubContext, me: User) -> str | None:
    """The organiser's default workflow, for a participant who has not been in yet: the
    frontend opens `?template=<name>` from its template dialog's routes (gallery.py) in place
    of its blank canvas, then records Comfy.TutorialCompleted, so this happens once."""
    if userdata.setting(hub, me, "Comfy.TutorialCompleted"):
        return None
    return templates.default_slug(hub.settings)


@router.get("/u/{user}/extensions/comfymulti/{name}", include_in_schema=False)
async def own_extension(request: Request, name: str, _me: User = Depends(workspace_owner)
                        ) -> Response:
    return await _static_file(request, OWN, OWN_STATIC, name)


def add_static_fallback(app_router: APIRouter) -> None:
    """The frontend's own files: registered last so every API route wins over them."""

    @app_router.get("/u/{user}/{path:path}", include_in_schema=False)
    async def frontend_file(request: Request, user: str, path: str) -> Response:
        if not USER_NAME.match(user):
            raise NotFound("no such workspace")
        return await _static_file(request, FRONTEND, STATIC, path)

    @app_router.get("/{name}", include_in_schema=False)
    @app_router.get("/{name}/", include_in_schema=False)
    async def predecessor_url(name: str) -> Response:
        """/user001/ (the predecessor's URL) → /u/user001/."""
        if name in RESERVED or not USER_NAME.match(name):
            raise NotFound("no such page")
        return RedirectResponse(f"/u/{name}/", status_code=308)
