"""Node catalog and prompt validation for :mod:`tests.fakes.comfyui`.

The catalog is the real ``object_info`` of ComfyUI 0.33.0 (887 classes), read at run
time from ``tests/data/comfyui/`` (:mod:`tests.testdata`). Two kinds of combo are
filled in per request, like the real server does from its folders:

* model combos, from the fake's ``models`` mapping (folder key → file names), using
  :data:`MODEL_INPUTS` (which loader input lists which model folder);
* input-file combos (``LoadImage.image`` …), from the fake's input directory
  (top-level files of the matching media kind, sorted).

:func:`validate_prompt` mirrors ComfyUI's ``execution.validate_prompt`` /
``validate_inputs`` (error types, messages, ``details`` and ``extra_info`` shapes,
``dependent_outputs``), driven by the catalog instead of Python node classes.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests import testdata

#: (class_type, input name) → model folder key (``GET /models/{folder}``).
MODEL_INPUTS: dict[tuple[str, str], str] = {
    **{
        (c, "ckpt_name"): "checkpoints"
        for c in (
            "CheckpointLoaderSimple",
            "CheckpointLoader",
            "unCLIPCheckpointLoader",
            "ImageOnlyCheckpointLoader",
            "CreateHookModelAsLora",
            "CreateHookModelAsLoraModelOnly",
            "LTXAVTextEncoderLoader",
            "LTXVAudioVAELoader",
        )
    },
    **{
        (c, "lora_name"): "loras"
        for c in (
            "LoraLoader",
            "LoraLoaderModelOnly",
            "CreateHookLora",
            "CreateHookLoraModelOnly",
            "LoraLoaderBypass",
            "LoraLoaderBypassModelOnly",
        )
    },
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    **{("TripleCLIPLoader", f"clip_name{i}"): "text_encoders" for i in (1, 2, 3)},
    **{("QuadrupleCLIPLoader", f"clip_name{i}"): "text_encoders" for i in (1, 2, 3, 4)},
    ("LTXAVTextEncoderLoader", "text_encoder"): "text_encoders",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("VAELoader", "vae_name"): "vae",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("DiffControlNetLoader", "control_net_name"): "controlnet",
    ("StyleModelLoader", "style_model_name"): "style_models",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("GLIGENLoader", "gligen_name"): "gligen",
    ("HypernetworkLoader", "hypernetwork_name"): "hypernetworks",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("LatentUpscaleModelLoader", "model_name"): "latent_upscale_models",
    ("PhotoMakerLoader", "photomaker_model_name"): "photomaker",
    ("ModelPatchLoader", "name"): "model_patches",
    ("AudioEncoderLoader", "audio_encoder_name"): "audio_encoders",
    ("LoadBackgroundRemovalModel", "bg_removal_name"): "background_removal",
    ("FrameInterpolationModelLoader", "model_name"): "frame_interpolation",
    ("OpticalFlowLoader", "model_name"): "optical_flow",
}

#: Folder keys answered by ``GET /models`` (ComfyUI 0.33.0's ``folder_names_and_paths``).
MODEL_FOLDERS = [
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "latent_upscale_models",
    "custom_nodes",
    "datasets",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
    "background_removal",
    "frame_interpolation",
    "geometry_estimation",
    "optical_flow",
    "detection",
]
FOLDER_ALIASES = {"unet": "diffusion_models", "clip": "text_encoders"}

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
VIDEO_EXT = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v"}
AUDIO_EXT = {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".opus", ".aac"}

#: class → (input, media extensions, custom-validation message) for input-file loaders.
FILE_INPUTS: dict[str, tuple[str, set[str], str]] = {
    "LoadImage": ("image", IMAGE_EXT, "Invalid image file: {}"),
    "LoadImageMask": ("image", IMAGE_EXT, "Invalid image file: {}"),
    "LoadVideo": ("file", VIDEO_EXT, "Invalid video file: {}"),
    "LoadAudio": ("audio", AUDIO_EXT, "Invalid audio file: {}"),
}

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"


def catalog_path() -> Path:
    return testdata.CATALOG


@functools.lru_cache(maxsize=2)
def _load(path: str) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def base_catalog() -> dict[str, Any]:
    """The recorded catalog (shared, do not mutate)."""
    return _load(str(catalog_path()))


def _set_combo(spec: list, names: list[str], *, keep: list[str] | None = None) -> list:
    spec = copy.deepcopy(spec)
    values = sorted(names) + (keep or [])
    if isinstance(spec[0], list):
        spec[0] = values
    elif len(spec) > 1 and isinstance(spec[1], dict):
        spec[1]["options"] = values
    return spec


def list_input_files(input_dir: Path, exts: set[str]) -> list[str]:
    try:
        return sorted(
            e.name
            for e in os.scandir(input_dir)
            if e.is_file() and os.path.splitext(e.name)[1].lower() in exts
        )
    except FileNotFoundError:
        return []


def effective_catalog(models: dict[str, list[str]], input_dir: Path) -> dict[str, Any]:
    """The catalog as ``GET /object_info`` answers it right now (shallow copy: only
    the node definitions with filled combos are new objects)."""
    out = dict(base_catalog())
    changed: dict[str, dict[str, Any]] = {}

    def node(cls: str) -> dict[str, Any] | None:
        if cls not in out:
            return None
        if cls not in changed:
            changed[cls] = out[cls] = copy.deepcopy(out[cls])
        return changed[cls]

    for (cls, name), folder in MODEL_INPUTS.items():
        nd = node(cls)
        if nd is None:
            continue
        for section in ("required", "optional"):
            spec = nd["input"].get(section, {}).get(name)
            if spec is not None:
                keep = ["pixel_space"] if (cls, name) == ("VAELoader", "vae_name") else None
                nd["input"][section][name] = _set_combo(
                    spec, list(models.get(folder, [])), keep=keep
                )
    for cls, (name, exts, _msg) in FILE_INPUTS.items():
        nd = node(cls)
        if nd is not None and name in nd["input"].get("required", {}):
            nd["input"]["required"][name] = _set_combo(
                nd["input"]["required"][name], list_input_files(input_dir, exts)
            )
    return out


# ------------------------------------------------------------------ validation


def _finalize_inputs(node_def: dict[str, Any], live: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """required/optional inputs after expanding V3 dynamic combos (``format`` +
    ``format.codec``), like ``comfy_api``'s ``get_finalized_class_inputs``."""
    out: dict[str, dict[str, Any]] = {"required": {}, "optional": {}}

    def walk(sections: dict[str, Any], prefix: str) -> None:
        for section in ("required", "optional"):
            for name, spec in sections.get(section, {}).items():
                full = prefix + name
                if spec and spec[0] == DYNAMIC_COMBO:
                    if full in live:
                        options = spec[1].get("options", []) if len(spec) > 1 else []
                        chosen = next((o for o in options if o.get("key") == live[full]), None)
                        if chosen is not None:
                            walk(chosen.get("inputs", {}), full + ".")
                            out[section][full] = spec
                elif (
                    isinstance(spec[0], str)
                    and spec[0].startswith("COMFY_")
                    and spec[0].endswith("_V3")
                ):
                    continue  # other dynamic inputs (autogrow …) are not validated here
                else:
                    out[section][full] = spec

    walk(node_def["input"], "")
    return out


def _types_compatible(received: Any, wanted: Any) -> bool:
    if received == wanted or received == "*" or wanted == "*":
        return True
    if isinstance(received, list) and wanted == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    r = {t.strip() for t in received.split(",")}
    w = {t.strip() for t in wanted.split(",")}
    return "*" in r or "*" in w or bool(r & w)


class _InnerError(Exception):
    pass


def validate_prompt(
    prompt: dict[str, Any],
    catalog: dict[str, Any],
    file_exists: Callable[[str], bool],
    partial: list[str] | None = None,
) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
    """``(valid, error, outputs_to_execute, node_errors)`` like ComfyUI. Converts
    INT/FLOAT/STRING/BOOLEAN literals in ``prompt`` in place, as the real one does."""
    outputs: list[str] = []
    for nid, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            title = (node.get("_meta", {}) if isinstance(node, dict) else {}).get("title")
            return (
                False,
                {
                    "type": "missing_node_type",
                    "message": f"Node '{title or f'ID #{nid}'}' has no class_type. "
                    "The workflow may be corrupted or a custom node is missing.",
                    "details": f"Node ID '#{nid}'",
                    "extra_info": {"node_id": nid, "class_type": None, "node_title": title},
                },
                [],
                {},
            )
        cls = node["class_type"]
        if cls not in catalog:
            title = node.get("_meta", {}).get("title", cls)
            return (
                False,
                {
                    "type": "missing_node_type",
                    "message": f"Node '{title}' not found. The custom node may not be installed.",
                    "details": f"Node ID '#{nid}'",
                    "extra_info": {"node_id": nid, "class_type": cls, "node_title": title},
                },
                [],
                {},
            )
        if catalog[cls].get("output_node") and (partial is None or nid in partial):
            outputs.append(nid)
    if not outputs:
        return (
            False,
            {
                "type": "prompt_no_outputs",
                "message": "Prompt has no outputs",
                "details": "",
                "extra_info": {},
            },
            [],
            {},
        )

    validated: dict[str, tuple[bool, list, str]] = {}

    def validate(uid: str, visiting: list[str]) -> tuple[bool, list, str]:
        if uid in validated:
            return validated[uid]
        if uid in visiting:
            path = [*visiting[visiting.index(uid) :], uid]
            cycle = list(dict.fromkeys(path))
            details = " -> ".join(f"{n} ({prompt[n]['class_type']})" for n in path)
            for n in cycle:
                validated[n] = (
                    False,
                    [
                        {
                            "type": "dependency_cycle",
                            "message": "Dependency cycle detected",
                            "details": details,
                            "extra_info": {"node_id": n, "cycle_nodes": cycle},
                        }
                    ],
                    n,
                )
            return validated[uid]
        inputs = prompt[uid]["inputs"]
        cls = prompt[uid]["class_type"]
        node_def = catalog[cls]
        sections = _finalize_inputs(node_def, inputs)
        custom = FILE_INPUTS.get(cls)
        errors: list[dict[str, Any]] = []
        valid = True
        for section in ("required", "optional"):
            for name, spec in sections[section].items():
                input_type = spec[0]
                extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                info = [input_type, extra]
                if name not in inputs:
                    if section == "required":
                        errors.append(
                            {
                                "type": "required_input_missing",
                                "message": "Required input is missing",
                                "details": name.split(".")[-1] if "." in name else name,
                                "extra_info": {"input_name": name},
                            }
                        )
                    continue
                val = inputs[name]
                if isinstance(val, list):
                    if len(val) != 2:
                        errors.append(
                            {
                                "type": "bad_linked_input",
                                "message": "Bad linked input, must be a length-2 list of "
                                "[node_id, slot_index]",
                                "details": name,
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": info,
                                    "received_value": val,
                                },
                            }
                        )
                        continue
                    src = val[0]
                    try:
                        received = catalog[prompt[src]["class_type"]]["output"][val[1]]
                    except (KeyError, IndexError, TypeError) as ex:
                        raise _InnerError(repr(ex) if isinstance(ex, KeyError) else str(ex)) from ex
                    if not _types_compatible(received, input_type):
                        errors.append(
                            {
                                "type": "return_type_mismatch",
                                "message": "Return type mismatch between linked nodes",
                                "details": f"{name}, received_type({received}) "
                                f"mismatch input_type({input_type})",
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": info,
                                    "received_type": received,
                                    "linked_node": val,
                                },
                            }
                        )
                        continue
                    visiting.append(uid)
                    try:
                        r = validate(src, visiting)
                    finally:
                        visiting.pop()
                    if r[0] is False:
                        valid = False
                    continue
                if isinstance(val, dict) and "__value__" in val:
                    val = inputs[name] = val["__value__"]
                try:
                    if input_type == "INT":
                        val = inputs[name] = int(val)
                    elif input_type == "FLOAT":
                        val = inputs[name] = float(val)
                    elif input_type == "STRING":
                        val = inputs[name] = str(val)
                    elif input_type == "BOOLEAN":
                        val = inputs[name] = bool(val)
                except (TypeError, ValueError) as ex:
                    errors.append(
                        {
                            "type": "invalid_input_type",
                            "message": f"Failed to convert an input value to a {input_type} value",
                            "details": f"{name}, {val}, {ex}",
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "received_value": val,
                                "exception_message": str(ex),
                            },
                        }
                    )
                    continue
                if custom is not None and name == custom[0]:
                    continue  # checked by the node's own VALIDATE_INPUTS below
                if "min" in extra and val < extra["min"]:
                    errors.append(
                        {
                            "type": "value_smaller_than_min",
                            "message": f"Value {val} smaller than min of {extra['min']}",
                            "details": name,
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "received_value": val,
                            },
                        }
                    )
                    continue
                if "max" in extra and val > extra["max"]:
                    errors.append(
                        {
                            "type": "value_bigger_than_max",
                            "message": f"Value {val} bigger than max of {extra['max']}",
                            "details": name,
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "received_value": val,
                            },
                        }
                    )
                    continue
                if isinstance(input_type, list) or input_type == "COMBO":
                    options = extra.get("options", []) if input_type == "COMBO" else input_type
                    if extra.get("multiselect") and isinstance(val, list):
                        bad = [v for v in val if v not in options]
                    else:
                        bad = [] if val in options else [val]
                    if bad:
                        config: Any = info
                        if len(options) > 20:
                            listing, config = f"(list of length {len(options)})", None
                        else:
                            listing = str(options)
                        errors.append(
                            {
                                "type": "value_not_in_list",
                                "message": "Value not in list",
                                "details": f"{name}: {', '.join(map(repr, bad))} not in {listing}",
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": config,
                                    "received_value": val,
                                },
                            }
                        )
                        continue
        if custom is not None and custom[0] in inputs and not isinstance(inputs[custom[0]], list):
            value = inputs[custom[0]]
            if not file_exists(str(value)):
                errors.append(
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": f"{custom[0]} - {custom[2].format(value)}",
                        "extra_info": {"input_name": custom[0]},
                    }
                )
        prev = validated.get(uid, (True, [], uid))
        ret = (
            prev[0] and valid and not errors,
            prev[1] + [e for e in errors if e not in prev[1]],
            uid,
        )
        validated[uid] = ret
        return ret

    good: list[str] = []
    failed: list[tuple[str, list]] = []
    node_errors: dict[str, Any] = {}
    for o in outputs:
        try:
            ok, reasons, _ = validate(o, [])
        except Exception as ex:
            ok = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {"exception_type": type(ex).__name__, "traceback": []},
                }
            ]
            validated[o] = (False, reasons, o)
        if ok:
            good.append(o)
            continue
        failed.append((o, reasons))
        for nid, (v, rs, _) in validated.items():
            if v is not True and rs:
                entry = node_errors.setdefault(
                    nid,
                    {
                        "errors": rs,
                        "dependent_outputs": [],
                        "class_type": prompt[nid]["class_type"],
                    },
                )
                entry["dependent_outputs"].append(o)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _o, es in failed for e in es)
        return (
            False,
            {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": details,
                "extra_info": {},
            },
            [],
            node_errors,
        )
    return True, None, good, node_errors
