"""BillingWatch: self-hosted monitoring of Stripe billing."""

__version__ = "0.1.0"
