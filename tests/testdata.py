"""Where the tests' data lives: the one rule every test, fake and bench script uses.

* :data:`ROOT` holds ``data/comfyui/`` (the captured ComfyUI 0.33.0 data: the node catalog
  ``object_info-0.33.0.json.gz``, the protocol ``recordings/`` and their ``api-workflows/``).
  By default it is this ``tests/`` folder, so the suite runs from a plain clone; set
  ``COMFYMULTI_SHARED`` to another folder holding ``data/comfyui/`` (e.g. a newer capture)
  to run against that instead.
* :data:`WORKFLOWS` holds the tests' own small UI-format workflows; they belong to the
  tests, so they always come from the repository.

Production code never imports this module (``tests/test_layout.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parent

ROOT = Path(os.environ["COMFYMULTI_SHARED"]) if os.environ.get("COMFYMULTI_SHARED") else TESTS
COMFYUI = ROOT / "data" / "comfyui"
CATALOG = COMFYUI / "object_info-0.33.0.json.gz"
RECORDINGS = COMFYUI / "recordings"
API_WORKFLOWS = COMFYUI / "api-workflows"

WORKFLOWS = TESTS / "data" / "workflows"

__all__ = ["API_WORKFLOWS", "CATALOG", "COMFYUI", "RECORDINGS", "ROOT", "WORKFLOWS"]
