"""Simulated node behaviour for :mod:`tests.fakes.comfyui`.

Values flowing between nodes are tiny descriptors (an "image" is its size, batch and
colour), enough to name and write real output files and to answer ``GetImageSize`` /
``PreviewAny`` like the real nodes. Node classes without a rule here pass matching
inputs through (first ``IMAGE`` input for ``IMAGE`` outputs) or produce an opaque
value of the declared output type.
"""

from __future__ import annotations

import json
import os
import random
import re
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes import media


@dataclass(frozen=True)
class FImage:
    width: int
    height: int
    batch: int
    colour: int = 0

    def __str__(self) -> str:  # what current_inputs shows for a tensor
        return f"tensor(shape=[{self.batch}, {self.height}, {self.width}, 3])"


@dataclass(frozen=True)
class FLatent:
    width: int
    height: int
    batch: int

    def __str__(self) -> str:
        return (
            f"{{'samples': tensor(shape=[{self.batch}, 4, {self.height // 8}, {self.width // 8}])}}"
        )


@dataclass(frozen=True)
class FVideo:
    images: FImage
    fps: float

    def __str__(self) -> str:
        return f"VideoFromComponents(frames={self.images.batch}, fps={self.fps})"


@dataclass(frozen=True)
class FAudio:
    seconds: float
    sample_rate: int = 44100
    channels: int = 1

    def __str__(self) -> str:
        samples = round(self.seconds * self.sample_rate)
        return f"{{'waveform': tensor(shape=[1, {self.channels}, {samples}])}}"


@dataclass(frozen=True)
class Opaque:
    kind: str
    source: str

    def __str__(self) -> str:
        return f"<{self.kind} from node {self.source}>"


class NodeError(Exception):
    """A runtime failure reported as ``execution_error``."""

    def __init__(self, exception_type: str, message: str, traceback: list[str]):
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message
        self.traceback = traceback


# The traceback the real LoadImage failure carries (scenario_queue.json, paths as recorded).
_F = '  File "ComfyUI/{}", line {}, in {}\n    {}\n'
PIL_TRACEBACK = [
    _F.format(
        "execution.py",
        545,
        "execute",
        "output_data, output_ui, has_subgraph, has_pending_tasks = await "
        "get_output_data(prompt_id, unique_id, obj, input_data_all, "
        "execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, v3_data=v3_data)",
    ),
    _F.format(
        "execution.py",
        344,
        "get_output_data",
        "return_values = await _async_map_node_over_list(prompt_id, unique_id, obj, "
        "input_data_all, obj.FUNCTION, allow_interrupt=True, "
        "execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, v3_data=v3_data)",
    ),
    _F.format(
        "execution.py", 318, "_async_map_node_over_list", "await process_inputs(input_dict, i)"
    ),
    _F.format("execution.py", 306, "process_inputs", "result = f(**inputs)"),
    _F.format("nodes.py", 1765, "load_image", "img = node_helpers.pillow(Image.open, image_path)"),
    _F.format("node_helpers.py", 62, "pillow", "x = fn(arg)"),
    '  File "venv/lib/python3.11/site-packages/PIL/Image.py", line 3730, in open\n'
    "    raise UnidentifiedImageError(msg)\n",
]


def pil_error(path: str) -> NodeError:
    return NodeError(
        "PIL.UnidentifiedImageError", f"cannot identify image file {path!r}\n", list(PIL_TRACEBACK)
    )


SAMPLERS = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"}
FRAME_PROGRESS = {"ColorTransfer"}  # nodes that report one progress step per batch frame
WEBSOCKET_SAVERS = {"SaveImageWebsocket"}  # images as binary frames, no file, no ``executed``
LOADERS_IMAGE = {"LoadImage", "LoadImageMask", "LoadImageOutput"}

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


def sniff_image(data: bytes) -> tuple[int, int] | None:
    size = media.png_size(data)
    if size:
        return size
    if data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return (64, 64)
    return None


def save_image_path(output_dir: Path, prefix: str) -> tuple[Path, str, int, str]:
    """ComfyUI's ``get_save_image_path``: folder, base name, next counter, subfolder."""
    norm = os.path.normpath(prefix)
    subfolder, base = os.path.dirname(norm), os.path.basename(norm)
    folder = (output_dir / subfolder).resolve()
    if not str(folder).startswith(str(output_dir.resolve())):
        raise NodeError(
            "Exception", "**** ERROR: Saving image outside the output folder is not allowed.", []
        )
    counter = 1
    if folder.is_dir():
        pat = re.compile(re.escape(base) + r"_(\d+)")
        found = [int(m.group(1)) for n in os.listdir(folder) if (m := pat.match(n))]
        counter = max(found, default=0) + 1
    else:
        folder.mkdir(parents=True, exist_ok=True)
    return folder, base, counter, subfolder


def _temp_prefix() -> str:
    return "ComfyUI_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))


def _png_text(ctx: NodeContext) -> dict[str, str]:
    text = {"prompt": json.dumps(ctx.prompt)}
    for k, v in (ctx.extra_data.get("extra_pnginfo") or {}).items():
        text[k] = json.dumps(v)
    return text


@dataclass
class NodeContext:
    node_id: str
    class_type: str
    node_def: dict[str, Any]
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    dirs: dict[str, Path]  # "input" / "output" / "temp"


def _first(inputs: dict[str, Any], kind: type) -> Any:
    return next((v for v in inputs.values() if isinstance(v, kind)), None)


def _write_images(ctx: NodeContext, images: FImage, prefix: str, kind: str) -> list[dict[str, str]]:
    folder, base, counter, subfolder = save_image_path(ctx.dirs[kind], prefix)
    data = media.make_png(images.width, images.height, images.colour, text=_png_text(ctx))
    results = []
    for i in range(images.batch):
        name = f"{base.replace('%batch_num%', str(i))}_{counter:05}_.png"
        (folder / name).write_bytes(data)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


def websocket_pngs(images: FImage) -> list[bytes]:
    """The PNGs ``SaveImageWebsocket`` sends for a batch (no metadata, as the real node).
    Deviation: image i gets the batch colour plus i in blue, so tests can tell a batch's
    images apart (a real sampler's batch differs too)."""
    r, g, b = media.rgb(images.colour)
    return [
        media.make_png(images.width, images.height, (r, g, (b + i) % 256))
        for i in range(images.batch)
    ]


def _write_audio(
    ctx: NodeContext, audio: FAudio, prefix: str, kind: str, ext: str
) -> list[dict[str, str]]:
    folder, base, counter, subfolder = save_image_path(ctx.dirs[kind], prefix)
    name = f"{base}_{counter:05}.{ext}"
    (folder / name).write_bytes(
        media.make_wav(audio.seconds, sample_rate=audio.sample_rate, channels=audio.channels)
    )
    return [{"filename": name, "subfolder": subfolder, "type": kind}]


def read_input_file(ctx: NodeContext, name: str) -> Path:
    for tag in ("output", "input", "temp"):
        if name.endswith(f" [{tag}]"):
            return ctx.dirs[tag] / name[: -len(tag) - 3]
    return ctx.dirs["input"] / name


def run_node(
    ctx: NodeContext, inp: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """Compute ``(outputs, ui)`` for one node; writes output files."""
    c = ctx.class_type
    out_types = ctx.node_def.get("output", [])
    if c == "EmptyImage":
        return (FImage(inp["width"], inp["height"], inp["batch_size"], inp["color"]),), None
    if c in LOADERS_IMAGE:
        path = read_input_file(ctx, str(inp["image"]))
        size = sniff_image(path.read_bytes()) if path.is_file() else None
        if size is None:
            raise pil_error(str(path))
        img = FImage(size[0], size[1], 1)
        return (
            (img, Opaque("MASK", ctx.node_id))
            if c != "LoadImageMask"
            else (Opaque("MASK", ctx.node_id),)
        ), None
    if c == "GetImageSize":
        img = inp["image"]
        return (img.width, img.height, img.batch), None
    if c in {
        "PrimitiveInt",
        "PrimitiveFloat",
        "PrimitiveString",
        "PrimitiveStringMultiline",
        "PrimitiveBoolean",
    }:
        return (inp["value"],), None
    if c == "PreviewAny":
        src = inp.get("source")
        if isinstance(src, str):
            value = src
        elif isinstance(src, int | float | bool):
            value = str(src)
        elif src is None:
            value = "None"
        else:
            value = str(src)
        return (value,), {"text": [value]}
    if c in {"SaveImage", "PreviewImage"}:
        kind = "output" if c == "SaveImage" else "temp"
        prefix = inp.get("filename_prefix", "ComfyUI") if kind == "output" else _temp_prefix()
        return (inp["images"],), {"images": _write_images(ctx, inp["images"], prefix, kind)}
    if c in {"SaveAnimatedWEBP", "SaveAnimatedPNG"}:
        img: FImage = inp["images"]
        ext = "webp" if c == "SaveAnimatedWEBP" else "png"
        folder, base, counter, subfolder = save_image_path(
            ctx.dirs["output"], inp.get("filename_prefix", "ComfyUI")
        )
        name = f"{base}_{counter:05}_.{ext}"
        fps = float(inp.get("fps", 6.0))
        if ext == "webp":
            data = media.make_animated_webp(
                img.width, img.height, [img.colour] * img.batch, fps=fps
            )
        else:
            data = media.make_png(img.width, img.height, img.colour, text=_png_text(ctx))
        (folder / name).write_bytes(data)
        ui: dict[str, Any] = {
            "images": [{"filename": name, "subfolder": subfolder, "type": "output"}]
        }
        if img.batch > 1:
            ui["animated"] = [True]
        return (img,), ui
    if c == "CreateVideo":
        return (FVideo(inp["images"], float(inp.get("fps", 30.0))),), None
    if c in {"SaveVideo", "SaveWEBM"}:
        video: FVideo = (
            inp["video"] if c == "SaveVideo" else FVideo(inp["images"], float(inp.get("fps", 24.0)))
        )
        ext = (
            "webm"
            if c == "SaveWEBM" or inp.get("format") in ("webm",)
            else "mkv"
            if inp.get("format") == "mkv"
            else "mp4"
        )
        folder, base, counter, subfolder = save_image_path(
            ctx.dirs["output"],
            inp.get("filename_prefix", "video/ComfyUI" if c == "SaveVideo" else "ComfyUI"),
        )
        name = f"{base}_{counter:05}_.{ext}"
        img = video.images
        (folder / name).write_bytes(
            media.make_mp4(img.width, img.height, img.batch, video.fps, img.colour)
        )
        return ((video,) if c == "SaveVideo" else ()), {
            "images": [{"filename": name, "subfolder": subfolder, "type": "output"}],
            "animated": [True],
        }
    if c == "EmptyAudio":
        return (
            FAudio(
                float(inp.get("duration", 60.0)),
                int(inp.get("sample_rate", 44100)),
                int(inp.get("channels", 2)),
            ),
        ), None
    if c == "LoadAudio":
        path = read_input_file(ctx, str(inp["audio"]))
        try:
            with wave.open(str(path), "rb") as w:
                audio = FAudio(
                    w.getnframes() / w.getframerate(), w.getframerate(), w.getnchannels()
                )
        except (wave.Error, EOFError, struct.error, OSError):
            audio = FAudio(1.0)
        return (audio,), None
    if c in {"SaveAudio", "SaveAudioMP3", "SaveAudioOpus", "PreviewAudio"}:
        ext = {"SaveAudioMP3": "mp3", "SaveAudioOpus": "opus"}.get(c, "flac")
        kind = "temp" if c == "PreviewAudio" else "output"
        prefix = _temp_prefix() if kind == "temp" else inp.get("filename_prefix", "audio/ComfyUI")
        return ((inp["audio"],) if out_types else ()), {
            "audio": _write_audio(ctx, inp["audio"], prefix, kind, ext)
        }
    if c == "SaveText":
        ext = {"txt": "txt", "csv": "csv", "md": "md", "json": "json"}.get(
            inp.get("format", "txt"), "txt"
        )
        folder, base, counter, subfolder = save_image_path(
            ctx.dirs["output"], inp.get("filename_prefix", "ComfyUI")
        )
        name = f"{base}_{counter:05}.{ext}"
        (folder / name).write_text(str(inp["text"]), encoding="utf-8")
        return (inp["text"],), {
            "text": [inp["text"]],
            "files": [{"filename": name, "subfolder": subfolder, "type": "output"}],
        }
    if c == "EmptyLatentImage" or (c.startswith("Empty") and "Latent" in c):
        return (
            FLatent(
                int(inp.get("width", 512)),
                int(inp.get("height", 512)),
                int(inp.get("batch_size", 1)),
            ),
        ), None
    if c.startswith("VAEDecode") and "AUDIO" not in out_types:
        lat = _first(inp, FLatent) or FLatent(512, 512, 1)
        return (FImage(lat.width, lat.height, lat.batch, 0x808080),), None
    return _passthrough(ctx, inp, out_types), None


def _passthrough(ctx: NodeContext, inp: dict[str, Any], out_types: list[Any]) -> tuple[Any, ...]:
    outs: list[Any] = []
    for t in out_types:
        if t == "IMAGE":
            outs.append(_first(inp, FImage) or FImage(64, 64, 1))
        elif t == "LATENT":
            outs.append(_first(inp, FLatent) or FLatent(512, 512, 1))
        elif t == "VIDEO":
            outs.append(_first(inp, FVideo) or FVideo(FImage(64, 64, 1), 24.0))
        elif t == "AUDIO":
            outs.append(_first(inp, FAudio) or FAudio(1.0))
        else:
            outs.append(Opaque(str(t), ctx.node_id))
    return tuple(outs)


def progress_plan(
    ctx: NodeContext, inp: dict[str, Any], sampler_steps: int
) -> tuple[int, tuple[int, int] | None]:
    """``(steps, preview_size)``: how many progress updates a node reports and, for
    samplers, the size of its latent previews."""
    if ctx.class_type in SAMPLERS and sampler_steps > 0:
        lat = _first(inp, FLatent) or FLatent(512, 512, 1)
        scale = min(1.0, 512 / max(lat.width, lat.height))
        return sampler_steps, (max(8, int(lat.width * scale)), max(8, int(lat.height * scale)))
    if ctx.class_type in FRAME_PROGRESS:
        img = _first(inp, FImage)
        return (img.batch if img else 1), None
    return 0, None
