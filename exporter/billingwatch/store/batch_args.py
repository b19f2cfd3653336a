"""One event's share of an apply_batch.lua call: its KEYS and its ARGV slice (docs/redis.md).

The contract between the store and any planner that encodes events itself: a planner's EventArgs
must equal event_args(plan_event(...), prefix) (keys and args), byte for byte. Every number
crosses as its decimal text, so Lua never rounds one.

An event's KEYS: its dedup key; with a subscription snapshot or payment, the subscription hash,
the lapse watch zset and the customer hash; then one key per check.
Its ARGV slice, in this order ('1'/'0' for booleans, '' for an absent text):
  flags ('R' requeue of a quarantined event, 'S' subscription, 'P' payment, in that order),
  dedup ttl, log line (JSON object without its closing brace, or ''),
  n, n x (counter field, delta), n, n x (gauge field, maximum),
  n checks, per check: op, ttl, member, at, window, cap, amount, threshold, gap_detail,
    n, n x gauge field (track: the open-now and oldest-open fields; 0 for another op),
    n, n x (counter field, delta), anomaly record JSON ('' for none), anomaly counter field,
  with 'S': id, at, rank, held, n, n x (gauge field, amount), currency, mrr, paying scheme,
    period end, ttl, customer ttl, ended counter, lapse watched, movement schemes (2; '' '' for none),
  with 'P': id, at, ttl.
JSON texts (log line, anomaly record) are json_text(): compact, non-ASCII as UTF-8 (what
orjson.dumps writes), a text with a lone surrogate escaped (which UTF-8 cannot carry).
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from billingwatch.recording.plan import Plan
from billingwatch.store.anomaly_text import stringify


@dataclass(frozen=True, slots=True)
class EventArgs:
    keys: tuple[str, ...]  # this event's Redis keys, already prefixed by the store's tag
    args: tuple[str, ...]  # this event's ARGV slice of apply_batch.lua
    # The event's Plan, built only when the batch falls back to the exact per-event script
    # (apply_batch.lua's overflow pre-pass; rare): a planner that skips Plans builds it then.
    plan: Callable[[], Plan] = field(compare=False, repr=False)


# A flat object of these values is written by orjson exactly as by json.dumps below (tests/test_json_text.py),
# at a fraction of its CPU; floats (repr against orjson's shortest form) and nesting go the stdlib's way.
_FLAT = frozenset({str, int, bool, type(None)})


def json_text(value: object) -> str:
    """The JSON text of a log line or anomaly record. Raises TypeError or ValueError."""
    if type(value) is dict and all(type(k) is str and type(v) in _FLAT for k, v in value.items()):
        try:
            return orjson.dumps(value).decode()
        except TypeError:  # orjson.JSONEncodeError: a lone surrogate, an integer beyond 64 bits
            pass
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:  # a lone surrogate: escaped, as JSON allows
            return json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text


def _pairs(values: dict[str, int]) -> list[str]:
    out = [str(len(values))]
    for name, value in values.items():
        out += (name, str(value))
    return out


def event_args(plan: Plan, prefix: str) -> EventArgs:
    """The reference encoding of a plan. Raises TypeError or ValueError for one that cannot be
    encoded (the store answers Unrecordable for it)."""
    tag = "{" + prefix + "}"
    sub, pay = plan.subscription, plan.payment
    keys = [f"{tag}:e:{plan.livemode}:{plan.event_id}"]
    if sub is not None:
        keys += (f"{tag}:s:{sub.livemode}:{sub.id}", f"{tag}:lapse:{sub.livemode}",
                 f"{tag}:cu:{sub.livemode}:{sub.customer_key}")
    elif pay is not None:
        keys += (f"{tag}:s:{pay.livemode}:{pay.id}", f"{tag}:lapse:{pay.livemode}", f"{tag}:cu:{pay.livemode}:-")
    flags = ("R" if plan.requeue else "") + ("S" if sub is not None else "") + ("P" if pay is not None else "")
    args = [flags, str(plan.dedup_ttl), "" if plan.log is None else json_text(plan.log.as_dict())[:-1],
            *_pairs(plan.counters), *_pairs(plan.maxima), str(len(plan.checks))]
    for check in plan.checks:
        keys.append(f"{tag}:c:{check.key}")
        args += (check.op, str(check.ttl), check.member, str(check.at), str(check.window), str(check.cap),
                 str(check.amount), str(check.threshold), check.gap_detail, str(len(check.gauges)),
                 *check.gauges, *_pairs(check.counters))
        if check.anomaly is None:
            args += ("", "")
        else:
            args += (json_text(stringify(check.anomaly.as_dict())), check.anomaly_counter)
    if sub is not None:
        args += (sub.id, str(sub.at), str(sub.rank), "1" if sub.held else "0", str(len(sub.gauges)))
        for name, amount in sub.gauges:
            args += (name, str(amount))
        args += (sub.mrr_currency, str(sub.contribution), sub.paying_scheme, str(sub.period_end), str(sub.ttl),
                 str(sub.customer_ttl or sub.ttl), sub.ended_counter, "1" if sub.lapse_watched else "0",
                 *(sub.movement_schemes or ("", "")))
    if pay is not None:
        args += (pay.id, str(pay.at), str(pay.ttl))
    return EventArgs(tuple(keys), tuple(args), lambda: plan)


def check_encodable(event: EventArgs) -> None:
    """Raises UnicodeEncodeError (a ValueError) for an event whose keys or args UTF-8 cannot carry
    (a lone surrogate in an id): alone, it would fail its whole batch's call."""
    for text in (*event.keys, *event.args):
        if not text.isascii():
            text.encode()
