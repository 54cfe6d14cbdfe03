"""Every error answer the hub gives, from one place.

The hub's own routes answer `{"error": {"type", "message"[, "details"]}}` (errors.error_body);
the ComfyUI-compatible routes answer ComfyUI's shape, `{"error": {"type", "message",
"details", "extra_info"}, "node_errors": {}}`, which the official frontend reads. A route
says which it is by its router's route class (`ComfyRoute`); nobody builds a body by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from comfymulti.errors import ComfyMultiError, InvalidInput, error_body, error_shape

log = logging.getLogger("comfymulti.hub")

# A 401 names a scheme; Bearer, so that no browser pops up its own password dialog (a
# browser that caches Basic credentials would send them on cross-site requests too).
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ComfyMulti"'}
_HTTP_TYPES = {404: "not_found", 405: "method_not_allowed"}


def _headers(exc: ComfyMultiError) -> dict[str, str] | None:
    headers = dict(_CHALLENGE) if exc.status_code == 401 else {}
    retry = exc.details.get("retry_after")
    if retry is not None:
        headers["Retry-After"] = str(retry)
    return headers or None


def error_response(exc: ComfyMultiError) -> JSONResponse:
    """The hub's own error shape."""
    return JSONResponse(error_body(exc), status_code=exc.status_code, headers=_headers(exc))


def comfy_error(exc: ComfyMultiError, node_errors: dict[str, Any] | None = None,
                error: dict[str, Any] | None = None) -> JSONResponse:
    """ComfyUI's error shape (as `POST /prompt` answers it). `error` replaces the one built
    from `exc` when validation produced ComfyUI's own error object."""
    body = error or {"type": exc.error_type, "message": exc.message, "details": exc.message,
                     "extra_info": {}}
    return JSONResponse({"error": body, "node_errors": node_errors or {}},
                        status_code=exc.status_code, headers=_headers(exc))


def comfy_message(message: str, status: int) -> JSONResponse:
    """The plain shape ComfyUI's jobs API uses for its errors: `{"error": "message"}`."""
    return JSONResponse({"error": message}, status_code=status)


def _validation_error(exc: RequestValidationError) -> InvalidInput:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return InvalidInput(f"{where}: {first.get('msg', 'invalid')}")


class ComfyRoute(APIRoute):
    """A ComfyUI-compatible route: any error it raises (its dependencies' included) is
    answered in ComfyUI's shape."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def comfy_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except ComfyMultiError as exc:
                return comfy_error(exc)
            except RequestValidationError as exc:
                return comfy_error(_validation_error(exc))

        return comfy_handler


def install(app: FastAPI) -> None:
    """The app's handlers: ours, FastAPI's validation errors, Starlette's HTTP errors."""

    @app.exception_handler(ComfyMultiError)
    async def _ours(_request: Request, exc: ComfyMultiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _HTTP_TYPES.get(exc.status_code, "http_error")
        return JSONResponse(error_shape(kind, str(exc.detail)), status_code=exc.status_code,
                            headers=exc.headers)
