"""Group commit: concurrent webhook requests of one process share one pipelined round trip to Redis.

When nothing is in flight a plan is sent at once (no added wait at light load). While a batch
is in flight, arriving plans queue and go together in the next pipeline (at most `max_batch`).
Each plan is still recorded atomically on its own, with its own reply (RedisStore.apply_many: one
apply_batch.lua call), and each caller gets its own outcome or error. A call that got no reply (a broken connection
mid-batch) is StoreUnavailable, so the webhook answers 503: Stripe's retry of an event that did
run comes back a duplicate, so it is counted once either way.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from billingwatch.recording.plan import Plan
from billingwatch.store.contract import Outcome, StoreUnavailable, Unrecordable

log = logging.getLogger("billingwatch.store")

ApplyMany = Callable[[Sequence[Plan]], Awaitable[list[Outcome | Unrecordable | StoreUnavailable]]]
MAX_BATCH = 128  # plans per pipeline: bounds one round trip's size and the wait of the last in it


class GroupCommit:
    def __init__(self, apply_many: ApplyMany, max_batch: int = MAX_BATCH) -> None:
        self._apply_many = apply_many
        self._max_batch = max_batch
        self._queue: list[tuple[Plan, asyncio.Future[Outcome]]] = []
        self._sender: asyncio.Task[None] | None = None  # the one task sending batches, while there are any

    async def apply(self, plan: Plan) -> Outcome:
        """Apply one plan as Store.apply does, in the next batch; raises its Unrecordable or StoreUnavailable."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((plan, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        batch: list[tuple[Plan, asyncio.Future[Outcome]]] = []
        try:
            while self._queue:
                batch = self._queue[:self._max_batch]
                del self._queue[:self._max_batch]
                try:
                    results = await self._apply_many([plan for plan, _ in batch])
                except Exception as exc:  # apply_many answers errors per plan; anything else: outcome unknown
                    log.exception("group commit: the batch failed")
                    results = [StoreUnavailable(type(exc).__name__)] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its request was cancelled (client gone, shutdown)
                        continue
                    if isinstance(result, Outcome):
                        future.set_result(result)
                    else:
                        future.set_exception(result)
        finally:
            self._sender = None
            # Only when this task was cancelled (shutdown): whatever it held has no known outcome.
            for _, future in [*batch, *self._queue]:
                if not future.done():
                    future.set_exception(StoreUnavailable("shutting down"))
            self._queue.clear()
