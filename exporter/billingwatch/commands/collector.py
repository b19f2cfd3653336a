"""The cyclic garbage collector paused while a replay or backfill records straight into the store.

Parsed events are trees of dicts and lists, freed by reference counting alone; yet their
allocations trigger a young collection every few hundred objects, and the batches in flight
survive into the old generation, which each full collection walks again: a profile of
`replay --direct` found the collector at a large share of its CPU. Paused, it runs once every
COLLECT_EVERY batches instead: a collection walks the one or two batches then alive whenever it
runs, so running it rarely costs little, and the cycles asyncio and exceptions leave are still
freed, so memory stays bounded on a file of any length.
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager

COLLECT_EVERY = 16  # batches between collections


class PausedCollector:
    def __init__(self) -> None:
        self._batches = 0

    def after_batch(self) -> None:
        """A batch is done and its documents freed: now and then, collect what cycles are left."""
        self._batches += 1
        if self._batches % COLLECT_EVERY == 0:
            gc.collect()


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
