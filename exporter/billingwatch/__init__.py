"""BillingWatch: self-hosted monitoring of Stripe billing."""

# The one place the version is written: pyproject.toml reads it (tool.setuptools.dynamic), and
# `billingwatch --version`, billingwatch_build_info and the OpenAPI document print it.
__version__ = "0.2.0"
