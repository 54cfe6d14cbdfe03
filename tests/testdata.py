"""Where the tests' data lives: in this repository, so the suite runs from a plain clone.

* ``data/comfyui/``: the captured ComfyUI 0.33.0 data (the node catalog
  ``object_info-0.33.0.json.gz``, the protocol ``recordings/`` and their ``api-workflows/``).
* ``data/workflows/``: the tests' own small UI-format workflows.

Production code never imports this module (``tests/test_layout.py``).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
COMFYUI = ROOT / "data" / "comfyui"
CATALOG = COMFYUI / "object_info-0.33.0.json.gz"
RECORDINGS = COMFYUI / "recordings"
API_WORKFLOWS = COMFYUI / "api-workflows"
WORKFLOWS = ROOT / "data" / "workflows"

__all__ = ["API_WORKFLOWS", "CATALOG", "COMFYUI", "RECORDINGS", "ROOT", "WORKFLOWS"]
