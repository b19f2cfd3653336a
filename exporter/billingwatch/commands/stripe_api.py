"""Reading Stripe's Events and Subscriptions APIs with the stripe SDK (backfill and reconcile)."""

import argparse
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import stripe
from stripe.params import EventListParams, SubscriptionListParams

from billingwatch.commands.account_option import account_api_key
from billingwatch.config import ConfigError, file_setting, from_env

# Stripe keeps events for 30 days; nothing older can be listed.
RETENTION_SECONDS = 30 * 86400
# The types README asks users to subscribe their endpoint to: the API lists every type, but a
# webhook endpoint only receives those it is subscribed to, so only these can be "missed".
SUBSCRIBED_TYPES = (
    "charge.succeeded", "charge.failed", "charge.pending", "charge.refunded", "refund.created",
    "charge.dispute.created", "radar.early_fraud_warning.created", "payment_intent.succeeded",
    "invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_failed",
    "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted",
    # State history moves (the money-signal counters it never does): the Radar reviews open now.
    "review.opened", "review.closed",
)
MAX_TYPES = 20  # the Events API's limit on types[]
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> int:
    """'30d', '24h', '90m' or '3600s' → seconds (an argparse type)."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30d, 24h, 90m or 3600s")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > RETENTION_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r}: Stripe keeps events for 30 days only")
    return seconds


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--type", dest="types", action="append", metavar="TYPE",
        help=f"event type to read (repeatable, at most {MAX_TYPES}); default: the types README tells you "
        "to subscribe your endpoint to",
    )
    parser.add_argument(
        "--api-base", default=os.environ.get("STRIPE_API_BASE", "https://api.stripe.com"),
        help="Stripe API address (env STRIPE_API_BASE); change it only for stripe-mock or a proxy",
    )
    parser.add_argument("--max-network-retries", type=int, default=5,
                        help="the stripe SDK's retries on 429/409/5xx and connection errors (default 5)")


def client_from(args: argparse.Namespace) -> stripe.StripeClient:
    """A client on the key in STRIPE_API_KEY (or STRIPE_API_KEY_FILE): a restricted key with Events and
    Subscriptions read only (reconcile reads Events only; backfill seeds subscriptions too)."""
    # --account NAME with an api_key_file (BILLINGWATCH_ACCOUNTS_FILE) reads that account's key.
    key = account_api_key(from_env(), getattr(args, "account", None)) \
        or file_setting(os.environ, "STRIPE_API_KEY") or os.environ.get("STRIPE_API_KEY", "")
    if not key:
        raise ConfigError(
            "STRIPE_API_KEY is not set: create a restricted key with read access to Events and Subscriptions only "
            "(Developers → API keys → Create restricted key) and put it there"
        )
    if key.startswith("sk_"):
        raise ConfigError("STRIPE_API_KEY is a secret key; give a restricted key (rk_...) with Events and "
                          "Subscriptions read only")
    # Our calls are all async: the SDK's httpx client serves them, as it serves the exporter's other
    # HTTP; without it the SDK builds a requests session for its sync methods, which we never call.
    return stripe.StripeClient(
        key, base_addresses={"api": args.api_base}, max_network_retries=args.max_network_retries,
        http_client=stripe.HTTPXClient(),
    )


def event_types(args: argparse.Namespace) -> list[str]:
    types: list[str] = args.types or list(SUBSCRIBED_TYPES)
    if len(types) > MAX_TYPES:
        raise ConfigError(f"at most {MAX_TYPES} --type values (a limit of Stripe's Events API)")
    return types


class StripeApiError(Exception):
    """Stripe's API failed after the SDK's retries; the message is one line."""


async def list_events(
    client: stripe.StripeClient, since_seconds: int, types: list[str], until: float | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Every event created in the last `since_seconds` (up to `until`), newest first, as plain dicts.

    The SDK follows `has_more` pages (auto-pagination) and retries 429/5xx itself.
    """
    now = time.time()
    params: EventListParams = {"limit": 100, "created": {"gte": int(now - since_seconds)}, "types": types}
    if until is not None:
        params["created"] = {"gte": int(now - since_seconds), "lte": int(until)}
    with _api_errors("Events", "give the restricted key Events read access"):
        page = await client.v1.events.list_async(params)
        async for event in page.auto_paging_iter():
            # for_json: the SDK decodes *_decimal strings (a subscription's prices) as Decimal.
            document: dict[str, Any] = event.to_dict(for_json=True)
            yield document


async def list_subscriptions(client: stripe.StripeClient) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """Every subscription of the account, whatever its status, as (listed_at, plain dict) pairs.

    `listed_at` (the same for all) is the last whole second before the listing began, on Stripe's
    clock when its first answer says (the Date header) and ours is ahead: every change Stripe made
    before it is in the listing, and every change from it on has an event at least as new.
    The items come embedded with their prices (product as an id), all MRR and plan mapping need.
    """
    started = time.time()
    params: SubscriptionListParams = {"status": "all", "limit": 100}
    with _api_errors("Subscriptions", "give the restricted key Subscriptions read access, or run backfill "
                     "with --no-subscriptions"):
        page = await client.v1.subscriptions.list_async(params)
        listed_at = int(min(started, _server_time(page.last_response) or started)) - 1
        async for subscription in page.auto_paging_iter():
            yield listed_at, subscription.to_dict(for_json=True)


def _server_time(response: stripe.StripeResponse | None) -> float | None:
    """The Date of a Stripe answer (unix time), None without a readable one."""
    headers = {k.lower(): v for k, v in (response.headers.items() if response else ())}
    try:
        return parsedate_to_datetime(headers["date"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


@contextmanager
def _api_errors(resource: str, permission_hint: str) -> Iterator[None]:
    """Stripe's errors (after the SDK's retries) as one-line ConfigError / StripeApiError."""
    try:
        yield
    except stripe.AuthenticationError:
        raise ConfigError("Stripe refused STRIPE_API_KEY (authentication failed)") from None
    except stripe.PermissionError:
        raise ConfigError(f"STRIPE_API_KEY may not read {resource}: {permission_hint}") from None
    except stripe.StripeError as exc:
        raise StripeApiError(f"Stripe {resource} API: {type(exc).__name__}: {exc.user_message or exc}") from None
