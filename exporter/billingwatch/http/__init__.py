"""The HTTP surface: routes, the webhook endpoint, access control and request limits."""
