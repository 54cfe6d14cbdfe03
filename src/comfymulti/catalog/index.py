"""What a prompt needs from a catalog, and catalogs prepared for matching.

A job may only go to a worker whose catalog has every node type of its prompt and every model
file it names (a combo value that looks like a model file).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

MODEL_EXTENSIONS = (
    ".safetensors", ".ckpt", ".pt", ".pth", ".pt2", ".bin", ".gguf", ".sft", ".onnx",
)


def requirements(prompt: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """Node types and model files the prompt needs: the key the scheduler matches workers on."""
    nodes = sorted({n["class_type"] for n in prompt.values()})
    files = sorted(
        {
            (n["class_type"], name, value)
            for n in prompt.values()
            for name, value in n.get("inputs", {}).items()
            if isinstance(value, str) and value.lower().endswith(MODEL_EXTENSIONS)
        }
    )
    return {"nodes": nodes, "files": [list(f) for f in files]}


def requirements_key(req: dict[str, list[Any]]) -> str:
    return json.dumps(req, sort_keys=True, separators=(",", ":"))


def combo_options(spec: Any) -> list[Any] | None:
    """The options of an input spec if it is a combo (old list form or V3 COMBO form)."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        return options if isinstance(options, list) else None
    return None


def merge_catalogs(catalogs: list[dict[str, Any]]) -> dict[str, Any]:
    """One catalog offering what any of `catalogs` offers: node types, combo options (model
    files), model lists and subgraph blueprints are unions; the first catalog's definitions
    win otherwise."""
    if len(catalogs) <= 1:
        return catalogs[0] if catalogs else {"object_info": {}, "models": {}}
    merged_info: dict[str, Any] = {}
    for catalog in catalogs:
        for class_type, node_def in catalog.get("object_info", {}).items():
            if class_type not in merged_info:
                merged_info[class_type] = copy.deepcopy(node_def)
                continue
            inputs = merged_info[class_type].get("input", {})
            for group in ("required", "optional"):
                for name, spec in (node_def.get("input", {}).get(group) or {}).items():
                    mine = (inputs.get(group) or {}).get(name)
                    ours, theirs = combo_options(mine), combo_options(spec)
                    if ours is not None and theirs is not None:
                        ours.extend(o for o in theirs if o not in ours)
    models: dict[str, list[str]] = {}
    subgraphs: dict[str, Any] = {}
    for catalog in catalogs:
        for folder, files in (catalog.get("models") or {}).items():
            models.setdefault(folder, [])
            models[folder].extend(f for f in files if f not in models[folder])
        for subgraph_id, entry in (catalog.get("subgraphs") or {}).items():
            subgraphs.setdefault(subgraph_id, entry)
    merged = {"object_info": merged_info, "models": models}
    return {**merged, "subgraphs": subgraphs} if subgraphs else merged


@dataclass
class CatalogIndex:
    """What one catalog offers, prepared for fast `can_run` checks."""

    nodes: frozenset[str]
    combos: dict[tuple[str, str], frozenset[str]]

    @classmethod
    def build(cls, catalog: dict[str, Any]) -> CatalogIndex:
        object_info = catalog.get("object_info", {})
        combos: dict[tuple[str, str], frozenset[str]] = {}
        for class_type, node_def in object_info.items():
            inputs = node_def.get("input", {}) if isinstance(node_def, dict) else {}
            for group in ("required", "optional"):
                for name, spec in (inputs.get(group) or {}).items():
                    options = combo_options(spec)
                    if options is not None:
                        combos[(class_type, name)] = frozenset(map(str, options))
        return cls(nodes=frozenset(object_info), combos=combos)

    def can_run(self, req: dict[str, list[Any]]) -> bool:
        if not set(req.get("nodes", ())) <= self.nodes:
            return False
        for class_type, name, value in req.get("files", ()):
            options = self.combos.get((class_type, name))
            if options is not None and value not in options:
                return False
        return True
