"""CPU per event of planning and encoding the lean types: plan_event() against the lean planner.

    python -m bench.lean_plan [--events 20000] [--repeat 3]

The events of bench/traffic.py's mix that recording/lean_plan.py takes (charge.succeeded/failed,
payment_intent.succeeded), planned as history and encoded as apply_batch.lua's arguments three
ways, in one process, each timed in CPU seconds (time.process_time): the reference
(parse_event + plan_event + batch_args.event_args), the lean Plan + event_args, and the lean
planner writing the arguments itself. Prints µs per event and the ratios to the reference.
"""

import argparse
import time
from collections.abc import Callable
from typing import Any

from bench import harness, traffic
from billingwatch.detectors import Context, build_detectors
from billingwatch.recording.events import parse_event
from billingwatch.recording.lean_plan import LEAN_TYPES, LeanPlanner
from billingwatch.recording.plan import plan_event
from billingwatch.store.batch_args import event_args

DEDUP_TTL, SUBSCRIPTION_TTL, PREFIX = 35 * 86400, 400 * 86400, "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(harness.machine())
    docs = [e for e in traffic.events(args.events) if e["type"] in LEAN_TYPES]
    detectors, context = build_detectors({}), Context(state_ttl=DEDUP_TTL)
    planner = LeanPlanner(detectors, context, DEDUP_TTL, 300)
    now = time.time() + 1

    def reference(doc: Any) -> object:
        return event_args(plan_event(parse_event(doc), received_at=now, detectors=detectors, context=context,
                                     dedup_ttl=DEDUP_TTL, subscription_ttl=SUBSCRIPTION_TTL, history=True), PREFIX)

    def lean_plan(doc: Any) -> object:
        plan = planner.plan(doc, now, True)
        assert plan is not None
        return event_args(plan, PREFIX)

    def lean_args(doc: Any) -> object:
        return planner.event_args(doc, now, True, PREFIX)

    ways: dict[str, Callable[[Any], object]] = {"reference": reference, "lean Plan + event_args": lean_plan,
                                                "lean, arguments written": lean_args}
    print(f"{len(docs)} events of the lean types out of {args.events}")
    for repetition in range(args.repeat):
        cost = {}
        for name, way in ways.items():
            start = time.process_time()
            for doc in docs:
                way(doc)
            cost[name] = (time.process_time() - start) / len(docs) * 1e6
        print(f"  {repetition + 1}: " + "; ".join(
            f"{name} {us:.1f} us ({cost['reference'] / us:.2f} x)" for name, us in cost.items()), flush=True)


if __name__ == "__main__":
    main()
