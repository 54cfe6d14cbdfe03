from __future__ import annotations

import json
import struct

from comfymulti.hub.workspaces.ws import _as_legacy_preview


def test_metadata_preview_becomes_legacy_for_clients_without_the_flag() -> None:
    meta = json.dumps({"node_id": "3", "prompt_id": "p", "image_type": "image/png"}).encode()
    frame = struct.pack(">II", 4, len(meta)) + meta + b"\x89PNG..."
    assert _as_legacy_preview(frame) == struct.pack(">II", 1, 2) + b"\x89PNG..."
    jpeg = json.dumps({"image_type": "image/jpeg"}).encode()
    frame = struct.pack(">II", 4, len(jpeg)) + jpeg + b"\xff\xd8"
    assert _as_legacy_preview(frame) == struct.pack(">II", 1, 1) + b"\xff\xd8"


def test_other_frames_pass_unchanged() -> None:
    text = struct.pack(">II", 3, 1) + b"7" + b"width: 64"
    assert _as_legacy_preview(text) == text
