"""Which account the pages and /api/* read (BILLINGWATCH_ACCOUNTS_FILE, accounts.py).

`?account=<name>` narrows a page or an API answer to one configured account; without it they
show every account, each record tagged with its `account_name` (when there are several).
`?connected_account=acct_...` narrows them to one Stripe Connect account (the records' `account`,
never a metric label). The middleware reads both once per request into context variables, so the
pages and the API, written for one store, read through `AccountsView` unchanged.
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from billingwatch.accounts import ACCOUNT_FIELD
from billingwatch.anomaly_ref import anomaly_id
from billingwatch.recording.plan import LogEntry, Plan
from billingwatch.recording.quarantine import Quarantine
from billingwatch.store import Store, StoreUnavailable, Unrecordable
from billingwatch.store.contract import LAPSE_HORIZON, Outcome, Snapshot
from billingwatch.store.write_gate import WriteGate

SELECTED: ContextVar[str | None] = ContextVar("billingwatch_account", default=None)
CONNECTED: ContextVar[str | None] = ContextVar("billingwatch_connected_account", default=None)
MAX_CONNECTED = 255


def stamp(record: Mapping[str, Any], name: str) -> int:
    value = record.get(name)
    return value if isinstance(value, int) else 0


class AccountSelection:
    """ASGI middleware: ?account= and ?connected_account= into SELECTED and CONNECTED (400 when
    malformed or unknown). The webhooks are left alone: their account is their path."""

    def __init__(self, app: ASGIApp, names: Sequence[str]) -> None:
        self.app = app
        self.names = tuple(names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith("/webhooks/"):
            await self.app(scope, receive, send)
            return
        params = QueryParams(scope.get("query_string", b""))
        account = params.get("account") or None
        connected = params.get("connected_account") or None
        error = None
        if account is not None and account not in self.names:
            error = f"unknown account {account[:40]!r}; configured: {', '.join(self.names)}"
        elif connected is not None and (len(connected) > MAX_CONNECTED
                                        or not (connected.isascii() and connected.isprintable())):
            error = f"connected_account must be at most {MAX_CONNECTED} printable characters"
        if error is not None:
            await JSONResponse({"error": error}, status_code=400)(scope, receive, send)
            return
        tokens = SELECTED.set(account), CONNECTED.set(connected)
        try:
            await self.app(scope, receive, send)
        finally:
            SELECTED.reset(tokens[0])
            CONNECTED.reset(tokens[1])


def per_account(handlers: Mapping[str, Callable[[Request], Awaitable[Response]]],
                primary: str) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that only makes sense for one account (the quarantine): the selected one, else `primary`."""

    async def endpoint(request: Request) -> Response:
        return await handlers[SELECTED.get() or primary](request)

    return endpoint


class AccountsView:
    """The reading side of a Store over every account's store: the selected account's, or all
    of them merged (newest first). Writes (a verdict) go to the store that holds the anomaly;
    the recording methods are the primary account's, and no page records through them."""

    def __init__(self, stores: Mapping[str, Store], primary: str, anomaly_log_size: int, event_log_size: int) -> None:
        self._stores = dict(stores)
        self._primary = self._stores[primary]
        self._tag = len(self._stores) > 1
        self._sizes = {"anomalies": anomaly_log_size, "events": event_log_size}
        self.kind = self._primary.kind
        self.gate: WriteGate = self._primary.gate

    def _chosen(self) -> list[tuple[str, Store]]:
        selected = SELECTED.get()
        return [(selected, self._stores[selected])] if selected is not None else list(self._stores.items())

    async def _merged(self, kind: str, limit: int, newest: str) -> list[dict[str, Any]]:
        connected = CONNECTED.get()
        read = self._sizes[kind] if connected is not None else limit  # a filter reads the whole log
        chosen = self._chosen()
        records: list[dict[str, Any]] = []
        for name, store in chosen:
            batch = await (store.anomalies(read) if kind == "anomalies" else store.events(read))
            records.extend({**r, ACCOUNT_FIELD: name} if self._tag else r for r in batch)
        if connected is not None:
            records = [r for r in records if r.get("account") == connected]
        if len(chosen) > 1:
            records.sort(key=lambda r: stamp(r, newest), reverse=True)
        return records[:limit]

    async def anomalies(self, limit: int) -> list[dict[str, Any]]:
        return await self._merged("anomalies", limit, "event_created")

    async def events(self, limit: int) -> list[dict[str, Any]]:
        return await self._merged("events", limit, "received")

    async def quarantined(self, limit: int, bodies: bool = False) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for name, store in self._chosen():
            batch = await store.quarantined(limit, bodies)
            entries.extend({**e, ACCOUNT_FIELD: name} if self._tag else e for e in batch)
        return entries[:limit]

    async def verdicts(self, anomaly_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for _, store in self._chosen():
            found.update(await store.verdicts(anomaly_ids))
        return found

    async def _holder(self, wanted: str) -> Store:
        for store in self._stores.values():
            if any(anomaly_id(r) == wanted for r in await store.anomalies(self._sizes["anomalies"])):
                return store
        return self._primary

    async def set_verdict(self, anomaly_id: str, verdict: str, at: int, counter: str) -> str | None:
        store = await self._holder(anomaly_id) if self._tag else self._primary
        return await store.set_verdict(anomaly_id, verdict, at, counter)

    async def can_record(self) -> str | None:
        for name, store in self._stores.items():
            reason = await store.can_record()
            if reason is not None:
                return f"account {name}: {reason}" if self._tag else reason
        return None

    async def ping(self) -> bool:
        return all([await store.ping() for store in self._stores.values()])

    async def close(self) -> None:
        pass  # the app closes each account's store

    # The recording side: the primary account's store (the webhooks hold their own stores).

    async def apply(self, plan: Plan) -> Outcome:
        return await self._primary.apply(plan)

    async def apply_many(self, plans: Sequence[Plan]) -> list[Outcome | Unrecordable | StoreUnavailable]:
        return await self._primary.apply_many(plans)

    async def snapshot(self, now: float, lapse_grace: int, lapse_horizon: int = LAPSE_HORIZON) -> Snapshot:
        return await self._primary.snapshot(now, lapse_grace, lapse_horizon)

    async def log_rejected(self, entry: LogEntry) -> None:
        await self._primary.log_rejected(entry)

    async def quarantine(self, record: Quarantine) -> bool:
        return await self._primary.quarantine(record)

    async def release(self, livemode: str, event_id: str) -> None:
        await self._primary.release(livemode, event_id)

    async def recorded(self, events: Sequence[tuple[str, str]]) -> list[bool]:
        return await self._primary.recorded(events)

    async def increment(self, counters: dict[str, int]) -> None:
        await self._primary.increment(counters)
