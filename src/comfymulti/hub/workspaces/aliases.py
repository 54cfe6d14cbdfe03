"""ComfyUI serves every API route twice, as /x and /api/x; scripts written for ComfyUI use
the short form (/prompt, /view, /history/{id}, /upload/image). This ASGI middleware maps
/u/<user>/x to /u/<user>/api/x for those routes, raw path included (the userdata routes read
it), so such scripts work unchanged against a workspace. /extensions/... is left alone: there
it is the static folder of extension scripts, not the /api/extensions list."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

_SHORT = re.compile(
    rb"^(/u/[^/]+/)(prompt|queue|history|view|upload|interrupt|object_info|system_stats|"
    rb"jobs|features|free|models|embeddings|settings|userdata|users|i18n|"
    rb"experiment|view_metadata|global_subgraphs|node_replacements|workflow_templates)"
    rb"(?=/|$|\?)"
)


class ApiAliases:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope["path"].encode()
            if _SHORT.match(raw):
                scope = dict(scope)
                scope["raw_path"] = _SHORT.sub(rb"\1api/\2", raw, count=1)
                scope["path"] = _SHORT.sub(rb"\1api/\2", scope["path"].encode(),
                                           count=1).decode()
        await self.app(scope, receive, send)
