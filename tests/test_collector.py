"""commands/collector.py: the collector paused during a direct replay, cycles still freed per batch."""

import gc
import weakref

from billingwatch.commands.collector import COLLECT_EVERY, collector_paused


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_paused_within_and_restored_after() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.unfreeze()


def test_a_garbage_cycle_is_freed_within_a_few_batches() -> None:
    try:
        with collector_paused() as collector:
            node = Node()
            gone = weakref.ref(node)
            del node
            for _ in range(COLLECT_EVERY - 1):
                collector.after_batch()
            assert gone() is not None  # nothing collects while paused
            collector.after_batch()
            assert gone() is None
    finally:
        gc.unfreeze()


def test_a_cycle_that_outlived_collections_is_freed_by_a_later_one() -> None:
    try:
        with collector_paused() as collector:
            node = Node()
            gone = weakref.ref(node)
            for _ in range(2 * COLLECT_EVERY):
                collector.after_batch()
            assert gone() is not None  # alive: survives, now in the old generation
            del node
            for _ in range(COLLECT_EVERY):
                collector.after_batch()
            assert gone() is None
    finally:
        gc.unfreeze()
