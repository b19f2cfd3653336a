"""Operator commands beside `serve`: replay, backfill, reconcile, simulate (one module each).

feed.py delivers events (signed webhooks to a running exporter, or straight into the store);
stripe_api.py reads Stripe's Events API; traffic.py builds the simulator's events (on billingwatch.fixtures).
"""
