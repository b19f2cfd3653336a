"""commands/collector.py: the collector paused during a direct replay, cycles still freed per batch."""

import gc
import weakref

from billingwatch.commands.collector import FULL_EVERY, collector_paused


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_paused_within_and_restored_after() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.unfreeze()


def test_a_garbage_cycle_is_freed_after_the_batch() -> None:
    try:
        with collector_paused() as collector:
            node = Node()
            gone = weakref.ref(node)
            del node
            assert gone() is not None  # nothing collects while paused
            collector.after_batch()
            assert gone() is None
    finally:
        gc.unfreeze()


def test_a_cycle_that_outlived_a_batch_is_freed_by_the_next_full_collection() -> None:
    try:
        with collector_paused() as collector:
            node = Node()
            gone = weakref.ref(node)
            collector.after_batch()
            collector.after_batch()  # alive: now in the old generation
            del node
            for _ in range(FULL_EVERY - 3):
                collector.after_batch()
            assert gone() is not None
            collector.after_batch()
            assert gone() is None
    finally:
        gc.unfreeze()
