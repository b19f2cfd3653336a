"""The simulator's traffic: a SaaS business's Stripe events, and the anomalies it can inject.

Normal traffic is flows of events as Stripe sends them: sign-ups, monthly renewals (some
declined with real decline codes, some recovered on a later attempt), cancellations, refunds,
disputes and Radar early fraud warnings. It never trips a stateful detector: every customer is
new to the run and pays at most once, in one currency, and renews at most once. Each
injection is one flow that trips exactly the detector, or the rate-based alert, it is named after.
The rate-based injections are sized from the traffic they are mixed into (the whole run, which
holds at least what any alert window holds) against the thresholds of the default rules, with a
margin, so each trips its alert at any --count and --rate.
"""

import math
import random
import string
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from billingwatch.fixtures import stripe_events as se
from billingwatch.rules import RulesConfig, load_config, seconds

DAY = 86400
MONTH = 30 * DAY
Event = dict[str, Any]

# Prices per currency in minor units (JPY has no minor unit); weights are the customer mix.
PRICES = {"usd": (900, 1900, 4900, 9900), "eur": (900, 1900, 4900), "gbp": (800, 1600, 4000),
          "cad": (1200, 2500, 6500), "jpy": (1000, 2000, 5000)}
CURRENCY_WEIGHTS = {"usd": 60, "eur": 20, "gbp": 10, "cad": 5, "jpy": 5}
# (failure_code, outcome.reason = decline code, outcome.type) with how often each occurs.
DECLINES = (
    (("card_declined", "insufficient_funds", "issuer_declined"), 35),
    (("card_declined", "generic_decline", "issuer_declined"), 25),
    (("card_declined", "do_not_honor", "issuer_declined"), 10),
    (("expired_card", "expired_card", "issuer_declined"), 10),
    (("card_declined", "card_velocity_exceeded", "issuer_declined"), 5),
    (("incorrect_cvc", "incorrect_cvc", "issuer_declined"), 5),
    (("card_declined", "lost_card", "issuer_declined"), 3),
    (("card_declined", "stolen_card", "issuer_declined"), 2),
    (("card_declined", "highest_risk_level", "blocked"), 5),
)
# Normal flows and their weights: about 5% of charges fail (a healthy SaaS declines 2-10%),
# refunds ~1-2%, disputes and early fraud warnings ~0.2% of flows.
FLOWS = {"renewal": 55, "signup": 20, "renewal_declined": 5, "recovery": 4, "cancel": 3, "refund": 3,
         "dispute": 0.2, "early_fraud_warning": 0.2}
SPIKE = 40  # the least a rate-based injection sends
MARGIN = 2.0  # injections aim at twice the alert's ratio
LATE_SHARE = 0.15  # of all the run's events, delivered late by webhook_lag (p95 needs over 5%)


@dataclass
class Tally:
    """What a run has sent so far, as the alert rules count it."""

    events: int = 0
    succeeded: Counter[str] = field(default_factory=Counter)  # successful charges by currency
    succeeded_amount: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    refunded_amount: Counter[str] = field(default_factory=Counter)
    disputes: int = 0

    def add(self, events: list["Event"]) -> None:
        for evt in events:
            self.events += 1
            obj = evt["data"]["object"]
            if evt["type"] == "charge.succeeded":
                self.succeeded[obj["currency"]] += 1
                self.succeeded_amount[obj["currency"]] += obj["amount"]
            elif evt["type"] == "charge.failed":
                self.failed += 1
            elif evt["type"] == "refund.created":
                self.refunded_amount[obj["currency"]] += obj["amount"]
            elif evt["type"] == "charge.dispute.created":
                self.disputes += 1

    def scaled(self, factor: float) -> "Tally":
        return Tally(round(self.events * factor), _scale(self.succeeded, factor),
                     _scale(self.succeeded_amount, factor), round(self.failed * factor),
                     _scale(self.refunded_amount, factor), round(self.disputes * factor))

    def plus(self, other: "Tally") -> "Tally":
        return Tally(self.events + other.events, self.succeeded + other.succeeded,
                     self.succeeded_amount + other.succeeded_amount, self.failed + other.failed,
                     self.refunded_amount + other.refunded_amount, self.disputes + other.disputes)


def _scale(counts: Counter[str], factor: float) -> Counter[str]:
    return Counter({key: math.ceil(value * factor) for key, value in counts.items()})


@dataclass
class Paid:
    charge: str
    intent: str
    amount: int
    currency: str


@dataclass
class Traffic:
    rng: random.Random
    run: str = field(default_factory=lambda: "".join(random.SystemRandom().choices(string.ascii_lowercase, k=6)))
    clock: Callable[[], float] = time.time
    _n: int = 0
    paid: deque[Paid] = field(default_factory=lambda: deque(maxlen=1000))
    subscriptions: deque[tuple[str, str, int, str]] = field(default_factory=lambda: deque(maxlen=1000))
    declined: deque[tuple[str, str, str, int, str]] = field(default_factory=lambda: deque(maxlen=1000))
    rules: RulesConfig = field(default_factory=load_config)
    sent: Tally = field(default_factory=Tally)  # every event yielded so far
    normal_sent: Tally = field(default_factory=Tally)  # normal traffic only, to extrapolate the rest
    remaining: int = 0  # normal events still to come after the injections
    started: float | None = None  # when the first event was built

    def expected(self) -> Tally:
        """The run's totals as the injections will leave them: all sent so far (earlier injections
        included) plus the rest of the normal traffic, extrapolated from the part sent, with a
        margin for the randomness of the mix."""
        if not self.normal_sent.events:
            return self.sent
        return self.sent.plus(self.normal_sent.scaled(1.25 * self.remaining / self.normal_sent.events))

    # ---------------------------------------------------------------- helpers

    def id(self, prefix: str) -> str:
        """Ids unique to this run, so runs against one store never collide."""
        self._n += 1
        return f"{prefix}_sim{self.run}{self._n:07d}"

    def now(self) -> int:
        return int(self.clock())

    def currency(self) -> str:
        return self.rng.choices(list(CURRENCY_WEIGHTS), weights=list(CURRENCY_WEIGHTS.values()))[0]

    def price(self, currency: str) -> int:
        return self.rng.choice(PRICES[currency])

    def fingerprint(self) -> str:
        return "".join(self.rng.choices(string.ascii_letters + string.digits, k=16))

    def event(self, event_type: str, obj: dict[str, Any], created: int, **kw: Any) -> Event:
        return se.event(event_type, obj, event_id=self.id("evt"), created=created, **kw)

    def payment(self, customer: str | None, amount: int, currency: str, at: int,
                decline: tuple[str, str, str] | None = None) -> list[Event]:
        """A card payment: charge.succeeded + payment_intent.succeeded, or charge.failed."""
        charge_id, intent_id = self.id("ch"), self.id("pi")
        code, reason, kind = decline or ("", None, "")
        charge = se.charge(charge_id=charge_id, customer=customer, amount=amount, currency=currency, created=at,
                           payment_intent=intent_id, fingerprint=self.fingerprint(),
                           status="failed" if decline else "succeeded", failure_code=code, reason=reason,
                           outcome_type=kind)
        if decline:
            return [self.event("charge.failed", charge, at)]
        self.paid.append(Paid(charge_id, intent_id, amount, currency))
        intent = se.payment_intent(intent_id=intent_id, charge_id=charge_id, customer=customer, amount=amount,
                                   currency=currency, created=at)
        return [self.event("charge.succeeded", charge, at), self.event("payment_intent.succeeded", intent, at)]

    def sub(self, sub_id: str, customer: str, amount: int, currency: str, status: str, at: int,
            period_start: int) -> dict[str, Any]:
        return se.subscription(subscription_id=sub_id, customer=customer, unit_amount=amount, quantity=1,
                               currency=currency, status=status, created=at, period_start=period_start,
                               period_end=period_start + MONTH)

    def invoice(self, customer: str, sub_id: str | None, total: int, currency: str, status: str, reason: str,
                at: int, attempt: int = 1, invoice_id: str | None = None) -> dict[str, Any]:
        return se.invoice(invoice_id=invoice_id or self.id("in"), customer=customer, subscription=sub_id,
                          total=total, currency=currency, status=status, billing_reason=reason,
                          attempt_count=attempt, created=at, period_start=at, period_end=at + MONTH)

    def earlier_payment(self) -> Paid:
        """A charge paid earlier in this run, each used once (one made up if there is none left)."""
        if self.paid:
            return self.paid.popleft()
        currency = self.currency()
        return Paid(self.id("ch"), self.id("pi"), self.price(currency), currency)

    # ---------------------------------------------------------------- normal flows

    def signup(self) -> list[Event]:
        at, customer, sub_id, currency = self.now(), self.id("cus"), self.id("sub"), self.currency()
        amount = self.price(currency)
        self.subscriptions.append((sub_id, customer, amount, currency))
        inv = self.invoice(customer, sub_id, amount, currency, "paid", "subscription_create", at)
        return [
            self.event("customer.subscription.created", self.sub(sub_id, customer, amount, currency, "active", at, at),
                       at, request_id=self.id("req")),
            self.event("invoice.created", inv, at),
            self.event("invoice.finalized", inv, at),
            *self.payment(customer, amount, currency, at),
            self.event("invoice.paid", inv, at),
        ]

    def renewal(self) -> list[Event]:
        """An existing subscriber's monthly renewal, paid; each subscriber renews once per run."""
        at, customer, sub_id, currency = self.now(), self.id("cus"), self.id("sub"), self.currency()
        amount = self.price(currency)
        self.subscriptions.append((sub_id, customer, amount, currency))
        draft = self.invoice(customer, sub_id, amount, currency, "draft", "subscription_cycle", at, attempt=0)
        paid = {**draft, "status": "paid", "attempt_count": 1, "attempted": True, "amount_paid": amount,
                "amount_remaining": 0}
        renewed = self.sub(sub_id, customer, amount, currency, "active", at - MONTH, at)
        return [
            self.event("customer.subscription.updated", renewed, at,
                       previous_attributes={"latest_invoice": self.id("in")}),
            self.event("invoice.created", draft, at),
            self.event("invoice.finalized", {**draft, "status": "open"}, at),
            *self.payment(customer, amount, currency, at),
            self.event("invoice.paid", paid, at),
        ]

    def renewal_declined(self) -> list[Event]:
        """A renewal whose card is declined; Smart Retries may recover it later (recovery)."""
        at, customer, sub_id, currency = self.now(), self.id("cus"), self.id("sub"), self.currency()
        amount, decline = self.price(currency), self.rng.choices(*zip(*DECLINES, strict=True))[0]
        inv = self.invoice(customer, sub_id, amount, currency, "open", "subscription_cycle", at)
        self.declined.append((customer, sub_id, currency, amount, inv["id"]))
        past_due = self.sub(sub_id, customer, amount, currency, "past_due", at - MONTH, at)
        return [
            self.event("invoice.created", {**inv, "status": "draft", "attempt_count": 0}, at),
            self.event("invoice.finalized", inv, at),
            *self.payment(customer, amount, currency, at, decline=decline),
            self.event("invoice.payment_failed", inv, at),
            self.event("customer.subscription.updated", past_due, at, previous_attributes={"status": "active"}),
        ]

    def recovery(self) -> list[Event]:
        """A declined renewal paid on its second attempt (the customer's only successful charge)."""
        if not self.declined:
            return self.renewal()
        customer, sub_id, currency, amount, invoice_id = self.declined.popleft()
        at = self.now()
        inv = self.invoice(customer, sub_id, amount, currency, "paid", "subscription_cycle", at - 3600,
                           attempt=2, invoice_id=invoice_id)
        self.subscriptions.append((sub_id, customer, amount, currency))
        active = self.sub(sub_id, customer, amount, currency, "active", at - MONTH, at - 3600)
        return [
            *self.payment(customer, amount, currency, at),
            self.event("invoice.paid", inv, at),
            self.event("customer.subscription.updated", active, at, previous_attributes={"status": "past_due"}),
        ]

    def cancel(self) -> list[Event]:
        at = self.now()
        if self.subscriptions:
            sub_id, customer, amount, currency = self.subscriptions.popleft()
        else:
            sub_id, customer, currency = self.id("sub"), self.id("cus"), self.currency()
            amount = self.price(currency)
        canceled = self.sub(sub_id, customer, amount, currency, "canceled", at, at - DAY)
        return [self.event("customer.subscription.deleted", canceled, at,
                           previous_attributes={"status": "active"})]

    def refund(self, full: bool = False) -> list[Event]:
        at, paid = self.now(), self.earlier_payment()
        amount = paid.amount if full or self.rng.random() < 0.7 else paid.amount // 2
        obj = se.refund(refund_id=self.id("re"), charge_id=paid.charge, payment_intent=paid.intent, amount=amount,
                        currency=paid.currency, created=at,
                        reason=self.rng.choice(("requested_by_customer", "duplicate", None)))
        return [self.event("refund.created", obj, at, request_id=self.id("req"))]

    def dispute(self, reason: str | None = None) -> list[Event]:
        at, paid = self.now(), self.earlier_payment()
        obj = se.dispute(dispute_id=self.id("du"), charge_id=paid.charge, payment_intent=paid.intent,
                         amount=paid.amount, currency=paid.currency, created=at,
                         reason=reason or self.rng.choice(("fraudulent", "product_not_received", "duplicate",
                                                           "subscription_canceled", "unrecognized")))
        return [self.event("charge.dispute.created", obj, at)]

    def early_fraud_warning(self) -> list[Event]:
        at, paid = self.now(), self.earlier_payment()
        obj = se.early_fraud_warning(warning_id=self.id("issfr"), charge_id=paid.charge, created=at,
                                     fraud_type=self.rng.choice(("made_with_stolen_card", "unauthorized_use_of_card",
                                                                 "fraudulent_card_application")))
        return [self.event("radar.early_fraud_warning.created", obj, at)]

    def normal(self) -> list[Event]:
        if self.started is None:
            self.started = self.clock()
        name = self.rng.choices(list(FLOWS), weights=list(FLOWS.values()))[0]
        flow: Callable[[], list[Event]] = getattr(self, name)
        return flow()

    # ---------------------------------------------------------------- injections

    def duplicate_charge(self) -> list[Event]:
        """A retry bug: the same customer charged the same amount twice, 40 s apart."""
        at, customer, currency = self.now(), self.id("cus"), self.currency()
        amount = self.price(currency)
        return [*self.payment(customer, amount, currency, at - 40), *self.payment(customer, amount, currency, at)]

    def negative_invoice(self) -> list[Event]:
        """A downgrade proration credit stacked past the price: an invoice total below zero."""
        at, customer, currency = self.now(), self.id("cus"), self.currency()
        inv = self.invoice(customer, self.id("sub"), -self.price(currency), currency, "paid", "subscription_update", at)
        return [self.event("invoice.created", {**inv, "status": "draft"}, at), self.event("invoice.finalized", inv, at)]

    def currency_mismatch(self) -> list[Event]:
        """A customer who paid in USD is charged in EUR."""
        at, customer = self.now(), self.id("cus")
        return [*self.payment(customer, 1900, "usd", at - 600), *self.payment(customer, 1900, "eur", at)]

    def double_invoice(self) -> list[Event]:
        """A billing-anchor bug: two renewal invoices for one subscription an hour apart."""
        at, customer, sub_id, currency = self.now(), self.id("cus"), self.id("sub"), self.currency()
        amount = self.price(currency)
        first = self.invoice(customer, sub_id, amount, currency, "draft", "subscription_cycle", at - 3600, attempt=0)
        second = self.invoice(customer, sub_id, amount, currency, "draft", "subscription_cycle", at, attempt=0)
        return [self.event("invoice.created", first, at - 3600), self.event("invoice.created", second, at)]

    def charge_failure_spike(self) -> list[Event]:
        """Card testing: a burst of small declined charges on guest cards, more than the failure
        ratio of every charge the run sends (and at least the rule's minimum volume)."""
        at, rule, run = self.now(), self.rules.charge_failure_spike, self.expected()
        ratio = min(MARGIN * rule.ratio, 0.9)
        charges = sum(run.succeeded.values()) + run.failed
        count = max(SPIKE, rule.min_charges, math.ceil(ratio * charges / (1 - ratio)))
        codes = (("incorrect_cvc", "incorrect_cvc", "issuer_declined"),
                 ("card_declined", "generic_decline", "issuer_declined"),
                 ("card_declined", "highest_risk_level", "blocked"))
        return [e for _ in range(count)
                for e in self.payment(None, self.rng.choice((100, 200, 500)), "usd", at,
                                      decline=self.rng.choice(codes))]

    def fraud_spike(self) -> list[Event]:
        """Stolen cards found out: a wave of fraudulent disputes (at least the rule's count, and
        above its ratio of the run's successful charges) and as many early fraud warnings."""
        rule, run = self.rules.fraud_spike, self.expected()
        count = max(SPIKE // 2, rule.max_disputes,
                    math.ceil(MARGIN * rule.dispute_ratio * sum(run.succeeded.values())) - run.disputes)
        return [e for _ in range(count) for e in (*self.dispute("fraudulent"), *self.early_fraud_warning())]

    def refund_spike(self) -> list[Event]:
        """A support incident: full refunds of this run's charges in its busiest currency, above
        the refund ratio of that currency's charged volume; fresh charges first if the currency
        would otherwise stay under the rule's minimum count."""
        rule, run = self.rules.refund_spike, self.expected()
        currency = max(run.succeeded, key=lambda c: run.succeeded[c], default="usd")
        events: list[Event] = []
        at = self.now()
        # A run longer than the window spreads its charges over several windows: count the share
        # of them one window holds (the run's length from the first half's pace).
        elapsed = max(1.0, self.clock() - self.started) if self.started is not None else 1.0
        share = min(1.0, seconds(rule.window) / (2 * elapsed))
        for _ in range(max(0, rule.min_charges + 5 - math.floor(run.succeeded[currency] * share))):
            events += self.payment(self.id("cus"), self.price(currency), currency, at)
        volume = run.succeeded_amount[currency] + sum(
            e["data"]["object"]["amount"] for e in events if e["type"] == "charge.succeeded")
        target = min(MARGIN * rule.ratio, 0.9) * volume - run.refunded_amount[currency]
        mine = [p for p in self.paid if p.currency == currency]
        refunded = 0
        while refunded < target or refunded == 0:
            if mine:
                paid = mine.pop()
                self.paid.remove(paid)
            else:  # a fresh charge refunded at once adds to both sides; the loop keeps going
                events += self.payment(self.id("cus"), self.price(currency), currency, at)
                paid = self.paid.pop()
                target += min(MARGIN * rule.ratio, 0.9) * paid.amount
            obj = se.refund(refund_id=self.id("re"), charge_id=paid.charge, payment_intent=paid.intent,
                            amount=paid.amount, currency=currency, created=at, reason="requested_by_customer")
            events.append(self.event("refund.created", obj, at, request_id=self.id("req")))
            refunded += paid.amount
        return events

    def webhook_lag(self) -> list[Event]:
        """A delivery backlog: one-off invoices Stripe created 20-40 minutes ago, arriving now, so
        many (LATE_SHARE of the run's events, and at least the rule's minimum) that the lag
        quantile of any window holding them is late. Invoices move no charge count."""
        at, rule = self.now(), self.rules.webhook_lag
        count = max(SPIKE, rule.min_events, math.ceil(LATE_SHARE * self.expected().events / (1 - LATE_SHARE)))
        events: list[Event] = []
        while len(events) < count:
            created, currency = at - self.rng.randint(1200, 2400), self.currency()
            inv = self.invoice(self.id("cus"), None, self.price(currency), currency, "open", "manual", created)
            events += [self.event("invoice.created", {**inv, "status": "draft"}, created),
                       self.event("invoice.finalized", inv, created)]
        return events

    def silent_lapse(self) -> list[Event]:
        """A subscription still active three days after its period ended, with no payment."""
        at, customer, currency = self.now(), self.id("cus"), self.currency()
        start = at - MONTH - 3 * DAY
        sub = self.sub(self.id("sub"), customer, self.price(currency), currency, "active", start, start)
        return [self.event("customer.subscription.updated", sub, at, previous_attributes={"cancel_at": None})]

    def subscription_downgrade(self) -> list[Event]:
        """A plan-change bug: a team subscription's seats cut from 10 to 3 and its SSO add-on
        removed, by no request and no schedule."""
        at, customer, sub_id = self.now(), self.id("cus"), self.id("sub")
        team = {"price_id": self.id("price"), "product": self.id("prod"), "unit_amount": 1500,
                "item_id": self.id("si"), "subscription_id": sub_id, "period_end": at + MONTH}
        sso = se.subscription_item(price_id=self.id("price"), product=self.id("prod"), unit_amount=5000,
                                   item_id=self.id("si"), subscription_id=sub_id, period_end=at + MONTH)
        before = [se.subscription_item(quantity=10, **team), sso]  # type: ignore[arg-type]
        after = [se.subscription_item(quantity=3, **team)]  # type: ignore[arg-type]
        return [se.subscription_updated(before, after, subscription_id=sub_id, customer=customer, request_id=None,
                                        created=at, event_id=self.id("evt"))]

    def large_refund(self) -> list[Event]:
        """A support tool crediting 1500 usd to a customer's balance: a post-payment credit note
        (it moves no refund counter, so no refund alert fires with it)."""
        at = self.now()
        note = se.credit_note(total=150_000, currency="usd", customer=self.id("cus"), note_id=self.id("cn"),
                              invoice_id=self.id("in"), created=at)
        return [self.event("credit_note.created", note, at, request_id=self.id("req"))]

    # ---------------------------------------------------------------- the money signals (issue 28)

    def payout_failed(self) -> list[Event]:
        """A payout returned by the bank: the account it was sent to is closed."""
        at, currency = self.now(), self.currency()
        obj = se.payout(status="failed", amount=50 * self.price(currency), currency=currency,
                        failure_code="account_closed", payout_id=self.id("po"), created=at)
        return [self.event("payout.failed", obj, at)]

    def dispute_loss_rate(self) -> list[Event]:
        """Disputes lost one after another (evidence never submitted): more than the rule's minimum
        closed, every one lost. Closing moves no dispute-opened count, so no fraud alert."""
        at, rule = self.now(), self.rules.dispute_loss_rate
        events = []
        for _ in range(rule.min_closed + 2):  # charges from before the run: the run's own stay for refunds
            currency = self.currency()
            obj = se.dispute(dispute_id=self.id("du"), charge_id=self.id("ch"), payment_intent=self.id("pi"),
                             amount=self.price(currency), currency=currency, created=at - 40 * DAY,
                             reason="product_not_received")
            obj["status"] = "lost"
            events.append(self.event("charge.dispute.closed", obj, at))
        return events

    def authentication_failure_spike(self) -> list[Event]:
        """A broken 3-D Secure step: PaymentIntents failing with authentication_required, twice the
        rule's minimum count (normal traffic has none, so any usual count is exceeded)."""
        at, rule = self.now(), self.rules.authentication_failure_spike
        events = []
        for _ in range(max(SPIKE // 2, math.ceil(MARGIN * rule.min_count))):
            currency = self.currency()
            obj = se.payment_intent_failed(code="authentication_required", amount=self.price(currency),
                                           currency=currency, customer=self.id("cus"), intent_id=self.id("pi"),
                                           created=at)
            events.append(self.event("payment_intent.payment_failed", obj, at))
        return events

    def review_backlog(self) -> list[Event]:
        """A Radar review opened an hour longer ago than the rule allows, never worked (its
        review.opened delivered now, as after an outage of the endpoint)."""
        at, rule = self.now(), self.rules.review_backlog
        obj = se.review(review_id=self.id("prv"), charge_id=self.id("ch"),
                        created=at - int(seconds(rule.max_age)) - 3600)
        return [self.event("review.opened", obj, at)]


INJECTIONS: dict[str, Callable[[Traffic], list[Event]]] = {
    "duplicate_charge": Traffic.duplicate_charge,
    "negative_invoice": Traffic.negative_invoice,
    "currency_mismatch": Traffic.currency_mismatch,
    "double_invoice": Traffic.double_invoice,
    "subscription_downgrade": Traffic.subscription_downgrade,
    "large_refund": Traffic.large_refund,
    "charge_failure_spike": Traffic.charge_failure_spike,
    "fraud_spike": Traffic.fraud_spike,
    "refund_spike": Traffic.refund_spike,
    "webhook_lag": Traffic.webhook_lag,
    "silent_lapse": Traffic.silent_lapse,
    "payout_failed": Traffic.payout_failed,
    "dispute_loss_rate": Traffic.dispute_loss_rate,
    "authentication_failure_spike": Traffic.authentication_failure_spike,
    "review_backlog": Traffic.review_backlog,
}


# Injections that add charges go before those sized from the charge counts; the lag injection,
# sized from every event, goes last.
ORDER = ("duplicate_charge", "currency_mismatch", "negative_invoice", "double_invoice", "subscription_downgrade",
         "large_refund", "silent_lapse", "payout_failed", "dispute_loss_rate", "authentication_failure_spike",
         "review_backlog", "refund_spike", "fraud_spike", "charge_failure_spike", "webhook_lag")


def stream(traffic: Traffic, count: int, inject: list[str]) -> Iterator[Event]:
    """`count` events of normal traffic, with the injections sent once, halfway through.

    Flows are built lazily, so each event's `created` is the time it is sent.
    """
    sent, injected = 0, False
    while sent < count or not injected:
        if not injected and sent >= count // 2:
            injected = True
            traffic.remaining = count - sent
            for name in sorted(dict.fromkeys(inject), key=ORDER.index):
                events = INJECTIONS[name](traffic)
                traffic.sent.add(events)
                yield from events
            continue
        for event in traffic.normal():
            if sent >= count or (not injected and sent >= count // 2):
                break
            sent += 1
            traffic.sent.add([event])
            traffic.normal_sent.add([event])
            yield event
