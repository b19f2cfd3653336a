"""The cyclic garbage collector paused while a replay or backfill records straight into the store.

Parsed events are trees of dicts and lists, freed by reference counting alone; yet their
allocations trigger a young collection every few hundred objects, and the batches in flight
survive into the old generation, which each full collection walks again: a profile of
`replay --direct` found the collector at a large share of its CPU. Paused, it runs once per
batch instead (the young generations; all of them every FULL_EVERY batches), so the cycles
asyncio and exceptions leave are still freed and memory stays bounded on a file of any length.
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager

FULL_EVERY = 64  # batches between full collections


class PausedCollector:
    def __init__(self) -> None:
        self._batches = 0

    def after_batch(self) -> None:
        """A batch is done and its documents freed: collect what cycles are left."""
        self._batches += 1
        gc.collect(2 if self._batches % FULL_EVERY == 0 else 1)


@contextmanager
def collector_paused() -> Iterator[PausedCollector]:
    gc.freeze()  # modules and settings live as long as the process: never walked again
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield PausedCollector()
    finally:
        if enabled:
            gc.enable()
