"""The store's layout version, and the in-place migration of a Redis store to it (docs/redis.md).

Layouts: 1 is the release at 886d805, which writes no version (an unversioned store is read as 1,
after its subscription hashes of the 2820652 shape are converted); 2 (this release) keeps the
state that holds money without a TTL: a subscription hash held in the gauges, and a customer
hash holding MRR.

The migration is online and safe to interrupt or to run twice at once: each step changes one
key at a time in one script that reads the key and writes only what is not there yet, so
running a step again changes nothing; a step done is marked and not run again; the version is
written last. A lock spares a second replica the work (it waits for the first), not safety.
"""

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

LAYOUT_VERSION = 2  # what this release writes and reads; bump with every layout change (docs/redis.md)
UNVERSIONED = 1  # the layout of a store with no version key: the release at 886d805
LOCK_TTL_MS = 30_000
SCAN_COUNT = 500

log = logging.getLogger("billingwatch.layout")


def newer_reason(found: int | str) -> str:
    """The one-line reason a replica refuses a store written by a newer release."""
    return (f"store layout {found} is newer than this release knows ({LAYOUT_VERSION}): "
            "upgrade this replica (docs/deployment.md#upgrades)")


def parse_version(raw: bytes | str | None) -> int | None:
    """The version a layout key holds: UNVERSIONED when absent, None when it is not a version."""
    if raw is None:
        return UNVERSIONED
    text = raw.decode() if isinstance(raw, bytes) else raw
    return int(text) if text.isascii() and text.isdigit() else None


class LayoutError(Exception):
    """The store cannot be migrated (a newer layout, or a shape no release knows): one line."""


# Step "fields": a subscription hash of the 2820652 shape (held, g as JSON pairs, pf, mv) gets
# the 886d805 fields ('g:<field>' = amount per held gauge field) and loses the old ones. A hash
# that already has 'g:' fields was rewritten by a later release after the old one: its 'g:'
# fields are its truth, the old fields are only dropped. Returns {0} untouched, {1} converted,
# {2} stale fields dropped, {3, field} a shape older than 2820652 (nothing written).
_FIELDS = """
local raw = redis.call('HGETALL', KEYS[1])
local s, has_g = {}, false
for i = 1, #raw, 2 do
  if raw[i]:sub(1, 2) == 'g:' then has_g = true else s[raw[i]] = raw[i + 1] end
end
for _, old in ipairs({ 'sf', 'mf', 'mrr', 'status' }) do
  if s[old] then return { 3, old } end
end
if not (s.held or s.g or s.pf or s.mv) then return { 0 } end
local result = has_g and 2 or 1
if ARGV[1] == 'dry' then return { result } end
if not has_g and s.held == '1' and s.g and s.g ~= '' then
  for _, pair in ipairs(cjson.decode(s.g)) do
    redis.call('HSET', KEYS[1], 'g:' .. pair[1], tostring(pair[2]))
  end
end
redis.call('HDEL', KEYS[1], 'held', 'g', 'pf', 'mv')
return { result }
"""

# Step "persist" (layout 2): a subscription hash held in the gauges ('g:' fields) or a customer
# hash holding MRR ('m:<currency>' > 0) loses its TTL. Returns 1 when it had one.
_PERSIST = """
if redis.call('TTL', KEYS[1]) < 0 then return 0 end
local raw = redis.call('HGETALL', KEYS[1])
for i = 1, #raw, 2 do
  local prefix = raw[i]:sub(1, 2)
  if (prefix == 'g:' or prefix == 'm:') and (tonumber(raw[i + 1]) or 0) > 0 then
    if ARGV[1] ~= 'dry' then redis.call('PERSIST', KEYS[1]) end
    return 1
  end
end
return 0
"""

# The version, written last and never lowered; the step markers go with it.
_FINISH = """
local found = tonumber(redis.call('GET', KEYS[1]) or '0')
if found and found >= tonumber(ARGV[1]) then return found end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return tonumber(ARGV[1])
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


@dataclass(frozen=True)
class Step:
    name: str
    patterns: tuple[str, ...]  # key names under the prefix ("s:*": subscription hashes)
    script: str
    what: str  # what it does to a key, for the report


STEPS = (
    Step("fields", ("s:*",), _FIELDS, "subscription hashes of the 2820652 shape converted"),
    Step("persist", ("s:*", "cu:*"), _PERSIST, "subscription and customer hashes holding money kept without a TTL"),
)


@dataclass
class Report:
    """What a migration found (dry run) or did."""

    found: int  # the layout version before
    dry_run: bool
    changed: dict[str, int] = field(default_factory=dict)  # step name -> keys changed (or to change)
    stale: int = 0  # 2820652-shape hashes a later release had rewritten: old fields dropped only
    version: int = 0  # the layout version after

    def lines(self) -> list[str]:
        verb = "would" if self.dry_run else "did"
        out = [f"store layout: {self.found}, this release: {LAYOUT_VERSION}"]
        for step in STEPS:
            out.append(f"  {step.name}: {self.changed.get(step.name, 0)} keys ({verb}: {step.what})")
        if self.stale:
            out.append(f"  fields: {self.stale} of them rewritten by a later release since: old fields dropped only")
        if self.found == LAYOUT_VERSION:
            out.append("nothing to do")
        elif self.dry_run:
            out.append(f"would write layout version {LAYOUT_VERSION}")
        else:
            out.append(f"wrote layout version {self.version}")
        return out


class Migration:
    """Migrates one Redis store (its keys under the hash tag `tag`) to LAYOUT_VERSION."""

    def __init__(self, redis: Any, tag: str, wait_seconds: float = 300.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, lock_ttl_ms: int = LOCK_TTL_MS) -> None:
        self._redis = redis
        self._lock_ttl_ms = lock_ttl_ms  # how soon another replica takes over from one that died
        self._tag = tag
        self._wait = wait_seconds
        self._sleep = sleep
        self.layout_key = f"{tag}:layout"
        self._lock_key = f"{tag}:layout:lock"
        self._steps_key = f"{tag}:layout:steps"  # step name -> "done"
        self._scripts = {s.name: redis.register_script(s.script) for s in STEPS}
        self._finish = redis.register_script(_FINISH)
        self._release = redis.register_script(_RELEASE)
        self._refresh = redis.register_script(_REFRESH)

    async def version(self) -> int | None:
        return parse_version(await self._redis.get(self.layout_key))

    async def found(self) -> int:
        found = await self.version()
        if found is None:
            raise LayoutError(f"store layout key {self.layout_key} holds no version number: refusing to touch it")
        if found > LAYOUT_VERSION:
            raise LayoutError(newer_reason(found))
        return found

    async def run(self, dry_run: bool = False) -> Report:
        """Check, then (unless dry_run) migrate. Raises LayoutError, RedisError."""
        found = await self.found()
        report = Report(found=found, dry_run=dry_run, version=found)
        if found == LAYOUT_VERSION:
            return report
        # Every key is checked before the first write: a shape no step knows refuses the whole run.
        await self._each_key(STEPS[0], dry=True, report=report)
        if dry_run:
            for step in STEPS[1:]:
                await self._each_key(step, dry=True, report=report)
            return report
        report.changed.clear()
        report.stale = 0
        token = secrets.token_hex(8)
        deadline = time.monotonic() + self._wait
        while not await self._redis.set(self._lock_key, token, nx=True, px=self._lock_ttl_ms):
            # Another replica migrates: wait for its version (or for its lock to lapse: it died).
            if await self.found() == LAYOUT_VERSION:
                report.version = LAYOUT_VERSION
                return report
            if time.monotonic() > deadline:
                raise LayoutError(f"another replica has held the migration lock {self._lock_key} "
                                  f"for over {self._wait:.0f} s")
            await self._sleep(0.2)
        try:
            if await self.found() == LAYOUT_VERSION:  # another replica finished meanwhile
                report.version = LAYOUT_VERSION
                return report
            for step in STEPS:
                if await self._redis.hget(self._steps_key, step.name) == b"done":
                    continue
                await self._each_key(step, dry=False, report=report, token=token)
                await self._redis.hset(self._steps_key, step.name, "done")
                log.info("layout migration: step %s done (%d keys)", step.name, report.changed.get(step.name, 0))
            report.version = int(await self._finish(keys=[self.layout_key, self._steps_key], args=[LAYOUT_VERSION]))
        finally:
            await self._release(keys=[self._lock_key], args=[token])
        return report

    async def correct_overlap(self) -> int:
        """Step persist again, at this layout, unless another replica is at it (its lock held)."""
        token = secrets.token_hex(8)
        if not await self._redis.set(self._lock_key, token, nx=True, px=self._lock_ttl_ms):
            return 0
        report = Report(found=LAYOUT_VERSION, dry_run=False)
        try:
            await self._each_key(STEPS[1], dry=False, report=report, token=token)
        finally:
            await self._release(keys=[self._lock_key], args=[token])
        return report.changed.get(STEPS[1].name, 0)

    async def _each_key(self, step: Step, dry: bool, report: Report, token: str = "") -> None:
        script = self._scripts[step.name]
        # Loaded first, then called as EVALSHA in pipelines (a cluster pipeline runs no Script object).
        await self._redis.script_load(step.script)
        for pattern in step.patterns:
            batch: list[bytes] = []
            async for key in self._redis.scan_iter(match=f"{self._tag}:{pattern}", count=SCAN_COUNT):
                batch.append(key)
                if len(batch) >= SCAN_COUNT:
                    await self._apply(script, step, batch, dry, report, token)
                    batch = []
            await self._apply(script, step, batch, dry, report, token)

    async def _apply(self, script: Any, step: Step, keys: list[bytes], dry: bool, report: Report, token: str) -> None:
        if not keys:
            return
        if token:
            await self._refresh(keys=[self._lock_key], args=[token, self._lock_ttl_ms])
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.execute_command("EVALSHA", script.sha, 1, key, "dry" if dry else "do")
            replies = await pipe.execute()
        for key, reply in zip(keys, replies, strict=True):
            code = int(reply[0]) if isinstance(reply, list) else int(reply)
            if code == 3:
                raise LayoutError(f"{key.decode()} has the field {reply[1].decode()!r} of a release older than "
                                  "2820652, which no migration converts: delete the store's keys and backfill")
            if code:
                report.changed[step.name] = report.changed.get(step.name, 0) + 1
            if code == 2:
                report.stale += 1


async def upkeep(redis: Any, tag: str) -> Report | int:
    """Run by `serve` at start-up and then every UPKEEP_SECONDS: migrate a store below this layout
    (raises LayoutError, RedisError); at this layout, the overlap correction: a release at layout 1
    (886d805) still running beside this one gives the money-holding hashes it writes a TTL, which
    this takes off again. Returns the migration's report, or how many keys the correction changed
    (0 too when another replica holds the lock: it does the same)."""
    migration = Migration(redis, tag)
    if await migration.found() < LAYOUT_VERSION:
        report = await migration.run()
        for line in report.lines():
            log.info("%s", line)
        return report
    return await migration.correct_overlap()


UPKEEP_SECONDS = 3600


__all__ = ["LAYOUT_VERSION", "UPKEEP_SECONDS", "LayoutError", "Migration", "RedisError", "Report",
           "newer_reason", "parse_version", "upkeep"]
