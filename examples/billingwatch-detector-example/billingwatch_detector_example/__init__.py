"""An example BillingWatch detector plugin (docs/detectors.md in the BillingWatch repository)."""
