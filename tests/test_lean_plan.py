"""The lean planner (recording/lean_plan.py) against plan_event(), the reference (issue 27).

Property-based: Stripe's real event shapes (billingwatch/fixtures), with fields of the envelope
and the object replaced by other JSON values or removed. For each document, live and history:
the lean plan is either None (the caller falls back to plan_event) or equal to the reference's
plan, field for field and in the same order; the store's arguments it writes without a Plan are
byte-identical to event_args() of the reference's plan (store/batch_args.py); and through the
Recorder, the one entry, both give the same plan or refuse with the same InvalidEvent.
"""

import copy
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billingwatch.detectors import Context, build_detectors
from billingwatch.detectors.currency_mismatch import CurrencyMismatch
from billingwatch.detectors.duplicate_charge import DuplicateCharge
from billingwatch.detectors.negative_invoice import NegativeInvoice
from billingwatch.fixtures import stripe_events as se
from billingwatch.recording.events import InvalidEvent, parse_event
from billingwatch.recording.lean_plan import LeanPlanner
from billingwatch.recording.plan import Plan, plan_event
from billingwatch.recording.recorder import LivemodeRejected, Recorder
from billingwatch.store import MemoryStore
from billingwatch.store.batch_args import event_args

DEDUP_TTL, SUBSCRIPTION_TTL, SKEW = 35 * 86400, 400 * 86400, 300
MISSING = object()  # a field removed


def bases(now: int) -> list[dict[str, Any]]:
    """One event of each shape the lean planner takes, built from Stripe's real objects."""
    return [
        se.event("charge.succeeded", se.charge(customer="cus_lean", amount=4900), created=now - 30),
        se.event("charge.succeeded", se.charge(customer=None, currency="eur"), created=now - 4000),  # a guest card
        se.event("charge.succeeded", se.charge(amount=0), created=now - 5, livemode=True),
        se.event("charge.failed", se.charge(status="failed", reason="insufficient_funds"), created=now - 90),
        se.event("charge.failed", se.charge(status="failed", reason="not_a_code", customer=None), created=now),
        se.event("payment_intent.succeeded", se.payment_intent(charge_id="ch_lean1", amount=1999), created=now - 2),
        se.event("payment_intent.succeeded", se.payment_intent(charge_id="ch_lean2", customer=None), created=now),
    ]


# What a field may be replaced with: the shapes a parser meets, valid and not.
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**66), max_value=2**66),
    st.sampled_from([0, 1, -1, 10**12, 10**12 + 1, 10**15, 10**15 + 1, 1.5]),
    st.sampled_from(["", "usd", "eur", "USD", "xxx", "cus_other", "ch_other", "succeeded", "évt_ü", "\ud800",
                     "x" * 255, "x" * 256, "insufficient_funds", "charge", "payment_intent", "event"]),
    st.text(max_size=6),
    st.just({}), st.fixed_dictionaries({"id": st.sampled_from(["cus_x", "", None, 5])}),
    st.lists(st.integers(), max_size=2),
    st.just(MISSING),
)
ENVELOPE_KEYS = ("id", "type", "created", "livemode", "object", "account", "request", "data")
OBJECT_KEYS = ("id", "object", "status", "amount", "amount_received", "currency", "customer", "payment_intent",
               "latest_charge", "payment_method_details", "outcome", "failure_code", "charges")


def mutated(doc: dict[str, Any], changes: list[tuple[str, str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for where, key, value in changes:
        data = doc.get("data")
        target = doc if where == "envelope" else data.get("object") if isinstance(data, dict) and where == "object" \
            else data
        if not isinstance(target, dict):
            continue
        if value is MISSING:
            target.pop(key, None)
        else:
            target[key] = copy.deepcopy(value)
    return doc


CHANGES = st.lists(st.one_of(
    st.tuples(st.just("envelope"), st.sampled_from(ENVELOPE_KEYS), VALUES),
    st.tuples(st.just("object"), st.sampled_from(OBJECT_KEYS), VALUES),
    st.tuples(st.just("data"), st.sampled_from(("object", "previous_attributes")), VALUES),
), max_size=3)


def reference(doc: Any, received_at: float, history: bool, detectors: list[Any]) -> Plan | InvalidEvent:
    try:
        return plan_event(parse_event(doc), received_at=received_at, detectors=detectors,
                          context=Context(state_ttl=DEDUP_TTL), dedup_ttl=DEDUP_TTL, subscription_ttl=SUBSCRIPTION_TTL,
                          history=history, max_clock_skew=SKEW)
    except InvalidEvent as exc:
        return exc


def assert_same_plan(lean: Plan, ref: Plan | InvalidEvent) -> None:
    assert isinstance(ref, Plan), f"lean planned what the reference refuses: {ref}"
    assert lean == ref
    # The same order too: the store's arguments are built in it.
    assert list(lean.counters.items()) == list(ref.counters.items())
    assert list(lean.maxima.items()) == list(ref.maxima.items())
    assert [c.anomaly and c.anomaly.as_dict() for c in lean.checks] == [
        c.anomaly and c.anomaly.as_dict() for c in ref.checks]
    assert lean.log == ref.log and (lean.log is None or list(lean.log.as_dict()) == list(ref.log.as_dict()))


def assert_same_args(planner: LeanPlanner, doc: Any, received_at: float, history: bool,
                     lean: Plan | None, ref: Plan | InvalidEvent) -> None:
    """The store's arguments written without the Plan: byte-identical to event_args() of the reference."""
    args = planner.event_args(doc, received_at, history, "bw:tag")
    if lean is None:
        assert args is None
        return
    assert args is not None and isinstance(ref, Plan)
    expected = event_args(ref, "bw:tag")
    assert (args.keys, args.args) == (expected.keys, expected.args)
    assert args.plan() == ref  # what the batch's exact fallback applies instead


DETECTOR_SETS = {
    "default": lambda: build_detectors({}),
    # Other thresholds, the other order: the checks follow the list.
    "reordered": lambda: [CurrencyMismatch(memory_days=30), DuplicateCharge(window_seconds=60), NegativeInvoice()],
    "none": lambda: [],
}


@pytest.mark.parametrize("detector_set", list(DETECTOR_SETS))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.integers(min_value=0, max_value=6), changes=CHANGES, history=st.booleans(),
       lag=st.sampled_from([0.0, 0.4, 7.5, 250.0, 90_000.0, -400.0]))
def test_a_lean_plan_is_the_reference_plan_or_none(detector_set: str, base: int, changes: list[tuple[str, str, Any]],
                                                    history: bool, lag: float) -> None:
    now = int(time.time())
    doc = mutated(bases(now)[base], changes)
    detectors = DETECTOR_SETS[detector_set]()
    received_at = now + lag + 0.25
    planner = LeanPlanner(detectors, Context(state_ttl=DEDUP_TTL), DEDUP_TTL, SKEW)
    lean = planner.plan(doc, received_at, history)
    ref = reference(doc, received_at, history, detectors)
    if lean is not None:
        assert_same_plan(lean, ref)
    assert_same_args(planner, doc, received_at, history, lean, ref)


SINGLE_VALUES = (MISSING, None, True, 0, -1, 5, 2**64, 10**12 + 1, 1.5, "", "usd", "USD", "cus_other", "évt_ü",
                 "\ud800", "x" * 256, {}, {"id": "cus_x"}, {"id": ""}, [1])


@pytest.mark.parametrize("detector_set", list(DETECTOR_SETS))
def test_every_single_field_change_is_planned_as_the_reference_plans_it_or_left_to_it(detector_set: str) -> None:
    """Each field the planners read, set to each of a set of odd values in turn: a systematic sweep
    beside the random combinations above."""
    now = int(time.time())
    detectors = DETECTOR_SETS[detector_set]()
    planner = LeanPlanner(detectors, Context(state_ttl=DEDUP_TTL), DEDUP_TTL, SKEW)
    places = [("envelope", k) for k in ENVELOPE_KEYS] + [("object", k) for k in OBJECT_KEYS] + [
        ("data", "object"), ("data", "previous_attributes")]
    lean_planned = 0
    for base in bases(now):
        for where, key in places:
            for value in SINGLE_VALUES:
                doc = mutated(base, [(where, key, value)])
                for history in (False, True):
                    lean = planner.plan(doc, now + 2.5, history)
                    ref = reference(doc, now + 2.5, history, detectors)
                    if lean is not None:
                        lean_planned += 1
                        assert_same_plan(lean, ref)
                    assert_same_args(planner, doc, now + 2.5, history, lean, ref)
    assert lean_planned > 500


@pytest.mark.parametrize("history", [False, True])
def test_the_real_shapes_take_the_lean_path(history: bool) -> None:
    """Not a planner that always says None: every base shape is planned lean, as the reference plans it."""
    now = int(time.time())
    detectors = build_detectors({})
    planner = LeanPlanner(detectors, Context(state_ttl=DEDUP_TTL), DEDUP_TTL, SKEW)
    for doc in bases(now):
        lean = planner.plan(doc, now + 1.5, history)
        assert lean is not None, doc["type"]
        ref = reference(doc, now + 1.5, history, detectors)
        assert_same_plan(lean, ref)
        assert_same_args(planner, doc, now + 1.5, history, lean, ref)
    assert any(p.checks for p in (planner.plan(d, now + 1.5, history) for d in bases(now)))


def test_a_plugin_detector_reading_a_type_sends_it_to_the_reference() -> None:
    class Plugin(DuplicateCharge):  # not a built-in class: its checks are its own
        pass

    now = int(time.time())
    planner = LeanPlanner([Plugin()], Context(state_ttl=DEDUP_TTL), DEDUP_TTL, SKEW)
    charge, failed = bases(now)[0], bases(now)[3]
    assert planner.plan(charge, now, False) is None
    assert planner.plan(failed, now, False) is not None  # the plugin does not read charge.failed


@settings(max_examples=300, deadline=None)
@given(base=st.integers(min_value=0, max_value=6), changes=CHANGES, history=st.booleans(),
       live_allowed=st.booleans())
def test_through_the_recorder_the_same_plan_or_the_same_refusal(base: int, changes: list[tuple[str, str, Any]],
                                                                history: bool, live_allowed: bool) -> None:
    now = int(time.time())
    doc = mutated(bases(now)[base], changes)
    recorder = Recorder(MemoryStore(), build_detectors({}), DEDUP_TTL, SUBSCRIPTION_TTL, max_clock_skew=SKEW)

    def outcome(lean: bool) -> Any:
        try:
            if lean:
                return recorder._plan(doc, now + 3.0, history, live_allowed)
            return recorder._plan(parse_event(doc), now + 3.0, history, live_allowed)  # an Event: never lean
        except (InvalidEvent, LivemodeRejected) as exc:
            return (type(exc).__name__, str(exc))

    lean, ref = outcome(True), outcome(False)
    if isinstance(ref, tuple) or isinstance(lean, tuple):
        # parse_event ran outside the entry for the reference: its refusal is the same one.
        assert lean == ref
    else:
        assert_same_plan(lean, ref)
