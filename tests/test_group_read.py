"""Group read: keys asked for while a read runs are read together by the next one; each caller
gets its own key's value, and a failed read fails only the callers in its group."""

from __future__ import annotations

import asyncio
import threading

import pytest

from comfymulti.blocking import Offload
from comfymulti.group_read import GroupRead
from tests.worker.util import until


class _Store:
    """A read that holds until `go` is set, noting the keys of each call."""

    def __init__(self, values: dict[str, int]) -> None:
        self.values = values
        self.calls: list[list[str]] = []
        self.go = threading.Event()
        self.fail_next = False

    def read(self, keys: list[str]) -> dict[str, int]:
        self.calls.append(list(keys))
        assert self.go.wait(5)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the database went away")
        return {k: self.values[k] for k in keys if k in self.values}


def test_keys_asked_for_during_a_read_are_read_together_by_the_next() -> None:
    store = _Store({"ann": 1, "bob": 2, "cy": 3})
    reads = GroupRead(store.read, Offload(4))

    async def main() -> list[int | None]:
        first = asyncio.ensure_future(reads("ann"))
        await until(lambda: len(store.calls) == 1)  # the first read runs alone
        rest = [asyncio.ensure_future(reads(k)) for k in ("bob", "cy", "bob", "nobody")]
        await asyncio.sleep(0.05)
        assert len(store.calls) == 1  # the others wait for it, not for threads of their own
        store.go.set()
        return await asyncio.gather(first, *rest)

    assert asyncio.run(main()) == [1, 2, 3, 2, None]
    assert store.calls == [["ann"], ["bob", "cy", "nobody"]]


def test_a_failed_read_fails_its_group_only() -> None:
    store = _Store({"ann": 1, "bob": 2})
    reads = GroupRead(store.read, Offload(1))

    async def main() -> None:
        store.fail_next = True
        failing = asyncio.ensure_future(reads("ann"))
        await until(lambda: len(store.calls) == 1)
        later = asyncio.ensure_future(reads("bob"))
        await asyncio.sleep(0.02)
        store.go.set()
        with pytest.raises(RuntimeError, match="went away"):
            await failing
        assert await later == 2
        assert await reads("ann") == 1

    asyncio.run(main())


def test_groups_hold_at_most_so_many_keys() -> None:
    store = _Store({str(n): n for n in range(7)})
    store.go.set()
    reads = GroupRead(store.read, Offload(1), most=3)

    async def main() -> list[int | None]:
        return await asyncio.gather(*(reads(str(n)) for n in range(7)))

    assert asyncio.run(main()) == list(range(7))
    assert [len(c) for c in store.calls] == [3, 3, 1]
