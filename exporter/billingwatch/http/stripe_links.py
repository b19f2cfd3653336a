"""Links into the Stripe Dashboard for the ids an anomaly names: test-mode objects live under
/test/, live ones at the root (https://dashboard.stripe.com/test/payments/ch_... vs
https://dashboard.stripe.com/payments/ch_...)."""

DASHBOARD = "https://dashboard.stripe.com"

# Id prefix → (what it is, the Dashboard section that shows it). Charges and payment intents
# both open as a payment.
SECTIONS = (
    ("ch_", "charge", "payments"),
    ("py_", "charge", "payments"),
    ("pi_", "payment intent", "payments"),
    ("cus_", "customer", "customers"),
    ("in_", "invoice", "invoices"),
    ("sub_", "subscription", "subscriptions"),
    ("dp_", "dispute", "disputes"),
    ("du_", "dispute", "disputes"),
    ("re_", "refund", "refunds"),
    ("pyr_", "refund", "refunds"),
    ("cn_", "credit note", "credit_notes"),
    ("evt_", "event", "events"),
)


def kind_of(object_id: str) -> str:
    """What a Stripe id names, from its prefix; '' when the prefix is not one above."""
    return next((kind for prefix, kind, _ in SECTIONS if object_id.startswith(prefix)), "")


def dashboard_url(object_id: str, livemode: bool) -> str | None:
    """The object's page in the Stripe Dashboard; None for an id without a known prefix (a guest
    payer's 'card:<fingerprint>', a test fixture's made-up id)."""
    for prefix, _, section in SECTIONS:
        if object_id.startswith(prefix) and len(object_id) > len(prefix) and object_id.isascii() \
                and object_id.replace("_", "").isalnum():
            return f"{DASHBOARD}{'' if livemode else '/test'}/{section}/{object_id}"
    return None
