"""Ingest: a Stripe event, parsed (events), planned (plan), recorded atomically (recorder)."""
