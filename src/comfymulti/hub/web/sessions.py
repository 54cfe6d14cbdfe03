"""The session cookie: a random id (server-side session, hub/services/sessions.py), HttpOnly,
SameSite=Lax, and Secure when participants reach the hub over https."""

from __future__ import annotations

from starlette.responses import Response

from comfymulti.hub.services.sessions import MAX_AGE

COOKIE = "comfymulti_session"


def set_cookie(response: Response, value: str, secure: bool) -> None:
    response.set_cookie(COOKIE, value, max_age=MAX_AGE, httponly=True, samesite="lax",
                        secure=secure, path="/")


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/")
