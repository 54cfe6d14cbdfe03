"""Fixtures for worker tests: asyncio for anyio, and fake ComfyUIs closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes.comfyui import FakeComfyUI


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_comfy() -> Iterator[Callable[..., FakeComfyUI]]:
    """Factory: a started FakeComfyUI with the given knobs."""
    started: list[FakeComfyUI] = []

    def make(**knobs: Any) -> FakeComfyUI:
        comfy = FakeComfyUI(**knobs).start()
        started.append(comfy)
        return comfy

    yield make
    for comfy in started:
        comfy.close()
