"""Why the store cannot take writes now: one place every check that finds out says so.

A refused write (a full Redis, a read-only replica, MISCONF, anything that makes the webhook
answer 503) closes the gate under the source "write", and the next write that succeeds opens
it again. Other checks close it under their own source (e.g. a store layout this release does
not know) and open it themselves. While it is closed, /ready answers 503 with the reason and
billingwatch_store_up reads 0, so BillingWatchStoreDown fires while Stripe retries into a wall.
"""

WRITE = "write"  # closed by a refused write, opened by the next write that succeeds


class WriteGate:
    def __init__(self) -> None:
        self._reasons: dict[str, str] = {}  # source → reason, in the order they closed it

    def refuse(self, source: str, reason: str) -> None:
        """Close the gate: `source` found the store refusing writes, for `reason` (one line, no secret)."""
        self._reasons[source] = reason

    def allow(self, source: str) -> None:
        """`source` no longer finds a reason to refuse."""
        self._reasons.pop(source, None)

    def refusing(self, source: str) -> bool:
        return source in self._reasons

    @property
    def reason(self) -> str | None:
        """None when nothing refuses writes, else "store not writable: <reasons>"."""
        if not self._reasons:
            return None
        return "store not writable: " + "; ".join(self._reasons.values())
