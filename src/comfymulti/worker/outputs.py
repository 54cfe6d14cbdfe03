"""Outputs: every file an `executed` event names is streamed from ComfyUI's /view to the hub,
and the event the user sees names the hub's stored copy, not ComfyUI's.

Upload keys are `node/kind/index/subfolder/filename`, so a retried upload (hub restart, network
cut) stores nothing twice. Files staged as this job's inputs are mapped back to the user's own
input names instead of being uploaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from comfymulti.errors import ComfyUIError, InvalidInput, NotFound
from comfymulti.protocol import StoredFile
from comfymulti.worker.staging import staging_folder

log = logging.getLogger("comfymulti.worker.outputs")

_PARALLEL_UPLOADS = 4


class _Hub(Protocol):
    async def upload_output(self, job_id: str, lease_id: str, *, key: str, node_id: str,
                            filename: str, subfolder: str, type: str,
                            body: Callable[[], AsyncIterator[bytes] | bytes]) -> StoredFile: ...


class _Comfy(Protocol):
    def view(self, filename: str, subfolder: str = "",
             type: str = "output") -> AsyncIterator[bytes]: ...


def is_file(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("filename"), str) and \
        bool(item["filename"])


def file_items(output: dict[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(kind, index, item) for every file in a node's UI output, whatever the kind."""
    for kind, items in (output or {}).items():
        if isinstance(items, list):
            for index, item in enumerate(items):
                if is_file(item):
                    yield kind, index, item


def output_key(node: str, kind: str, index: int, item: dict[str, Any]) -> str:
    return f"{node}/{kind}/{index}/{item.get('subfolder') or ''}/{item['filename']}"


async def deliver_executed(data: dict[str, Any], *, job_id: str, lease_id: str, hub: _Hub,
                           comfy: _Comfy) -> dict[str, Any]:
    """Upload the files of one `executed` event; the event with the stored names in it.

    A file ComfyUI cannot serve or the hub refuses is left out (and logged); LeaseLost and
    Unauthorized propagate.
    """
    node = str(data.get("node"))
    output = data.get("output") or {}
    if not isinstance(output, dict):
        return data
    limit = asyncio.Semaphore(_PARALLEL_UPLOADS)

    async def one(kind: str, index: int, item: dict[str, Any]) -> dict[str, Any] | None:
        filename, subfolder = item["filename"], str(item.get("subfolder") or "")
        kind_of_file = str(item.get("type") or "output")
        if kind_of_file == "input":
            return _unstaged_input(item, job_id)
        async with limit:
            try:
                stored = await hub.upload_output(
                    job_id, lease_id, key=output_key(node, kind, index, item), node_id=node,
                    filename=filename, subfolder=subfolder,
                    type=kind_of_file if kind_of_file in ("output", "temp") else "output",
                    body=lambda: comfy.view(filename, subfolder, kind_of_file))
            except (ComfyUIError, InvalidInput, NotFound) as exc:
                log.warning("job %s: output %s/%s not delivered: %s", job_id, subfolder,
                            filename, exc.message)
                return None
        return {**item, **stored.model_dump()}

    found = list(file_items(output))
    stored = await asyncio.gather(*(one(kind, i, item) for kind, i, item in found))
    new_output = {kind: list(items) if isinstance(items, list) else items
                  for kind, items in output.items()}
    dropped: dict[str, set[int]] = {}
    for (kind, index, _item), result in zip(found, stored, strict=True):
        if result is None:
            dropped.setdefault(kind, set()).add(index)
        else:
            new_output[kind][index] = result
    for kind, indexes in dropped.items():
        new_output[kind] = [x for i, x in enumerate(new_output[kind]) if i not in indexes]
    return {**data, "output": new_output}


def _unstaged_input(item: dict[str, Any], job_id: str) -> dict[str, Any]:
    """An input file shown as output: name it as the user knows it (their input folder)."""
    folder = staging_folder(job_id)
    sub = str(item.get("subfolder") or "")
    if sub == folder or sub.startswith(folder + "/"):
        sub = sub[len(folder):].lstrip("/")
    return {**item, "subfolder": sub}
