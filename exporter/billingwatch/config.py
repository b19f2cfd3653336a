"""Settings from the environment (and `billingwatch serve` flags). Secrets may come from *_FILE."""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from billingwatch.accounts import DEFAULT_ACCOUNT, Account, AccountsError
from billingwatch.accounts import load as load_accounts
from billingwatch.http.access import host_pattern
from billingwatch.http.web_config import WebConfig, WebConfigError
from billingwatch.http.web_config import load as load_web_config
from billingwatch.metrics.labels import OTHER_PLAN
from billingwatch.money import is_currency
from billingwatch.setting_files import read_setting_file
from billingwatch.store.redis_connect import SENTINEL_SCHEME, check_prefix, parse_sentinel_url

DEFAULT_PORT = 9786
DAY = 86400


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it, never its secret value."""


def file_setting(environ: Mapping[str, str], name: str) -> str | None:
    """The content of the file NAME_FILE names (Docker/Kubernetes secrets), stripped; None when
    NAME_FILE is unset. An empty or blank file is a ConfigError: it is a secret that was never
    written (an empty token would mean "no token", serving customer data to loopback)."""
    path = environ.get(name + "_FILE", "")
    if not path:
        return None
    value = read_setting_file(path, f"{name}_FILE", ConfigError)
    if not value:
        raise ConfigError(f"{name}_FILE: {path} is empty; write the setting into it, or unset {name}_FILE")
    return value


def _secret(environ: Mapping[str, str], name: str) -> str:
    """A secret from NAME, or from the file NAME_FILE names."""
    value = file_setting(environ, name)
    return environ.get(name, "") if value is None else value
secret = _secret  # for commands reading a secret the same way (commands/web_config.py)


def env_int(environ: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int = 10**9) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    # Plain ASCII digits only: int() would also take "١٢", "1_000" and thousands of digits.
    if not re.fullmatch(r"-?[0-9]{1,18}", raw.strip()):
        raise ConfigError(f"{name} must be an integer, got {raw[:40]!r}")
    value = int(raw)
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    if value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}")
    return value


def _currencies(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated currency codes, lower-cased as Stripe sends them."""
    codes = tuple(c.strip().lower() for c in environ.get(name, "").split(",") if c.strip())
    for code in codes:
        if not is_currency(code):
            raise ConfigError(f"{name}: {code!r} is not a three-letter currency code (e.g. usd,eur)")
    return tuple(dict.fromkeys(codes))


# BILLINGWATCH_PLANS: each name is a label value of billingwatch_mrr_by_plan_amount, so few and plain.
PLAN_NAME = re.compile(r"[a-z0-9_.-]{1,32}")
PLAN_ID = re.compile(r"[\x21-\x2b\x2d-\x3c\x3e-\x7e]{1,255}")  # printable ASCII but space, comma and "="
MAX_PLAN_NAMES = 50
MAX_PLAN_IDS = 1000


def _plans(environ: Mapping[str, str], name: str) -> dict[str, str]:
    """price_or_product_id=plan_name,...: which plan each price or product belongs to (MRR by plan)."""
    plans: dict[str, str] = {}
    for entry in (e.strip() for e in environ.get(name, "").split(",")):
        if not entry:
            continue
        key, sep, plan = (part.strip() for part in entry.partition("="))
        if not sep or not PLAN_ID.fullmatch(key):
            raise ConfigError(f"{name}: {entry[:60]!r} is not price_or_product_id=plan_name (e.g. price_123=pro)")
        if not PLAN_NAME.fullmatch(plan):
            raise ConfigError(f"{name}: plan name {plan[:40]!r} must be 1 to 32 characters of a-z 0-9 _ . -")
        if plans.get(key, plan) != plan:
            raise ConfigError(f"{name}: {key[:60]!r} is mapped to two plans ({plans[key]!r} and {plan!r})")
        plans[key] = plan
    if len(plans) > MAX_PLAN_IDS:
        raise ConfigError(f"{name}: at most {MAX_PLAN_IDS} price or product ids (got {len(plans)})")
    names = set(plans.values())
    if len(names) > MAX_PLAN_NAMES:
        raise ConfigError(f"{name}: at most {MAX_PLAN_NAMES} distinct plan names (got {len(names)}): each is a "
                          "label value of billingwatch_mrr_by_plan_amount")
    return plans


def _hosts(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    try:
        return tuple(host_pattern(h) for h in environ.get(name, "").split(",") if h.strip())
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _url(name: str, value: str) -> str:
    """An http(s) base URL with a host, no query, fragment or whitespace; the error never shows it
    (a URL may carry a password)."""
    parts = urlsplit(value)
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment
            or any(c.isspace() for c in value)):
        raise ConfigError(f"{name}: each URL must be http:// or https://, a host and an optional path "
                          "(e.g. http://alertmanager:9093)")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ConfigError(f"{name}: a URL has an invalid port") from None
    return value.rstrip("/")


def _urls(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated URLs (e.g. an Alertmanager HA pair), each checked, duplicates dropped."""
    value = _secret(environ, name)  # may hold basic-auth credentials: *_FILE works too
    return tuple(dict.fromkeys(_url(name, u.strip()) for u in value.split(",") if u.strip()))


# Secrets copied from examples (.env.example, the README quick start) rather than from Stripe. A real
# secret is whsec_ and random letters and digits, mixed case: it never matches these all-lowercase words.
PLACEHOLDER_SECRET = re.compile(
    r"(whsec_)?(replace|change|your|example|placeholder|secret|dummy|todo|x{3,})[a-z_]*|whsec_?"
)


def is_placeholder(secret: str) -> bool:
    """True for a secret that is obviously not a real signing secret: livemode stays closed."""
    return PLACEHOLDER_SECRET.fullmatch(secret) is not None


def _redis_url(environ: Mapping[str, str]) -> str:
    """REDIS_URL (or REDIS_URL_FILE); a Sentinel URL is checked here, so a typo fails at start-up."""
    url = _secret(environ, "REDIS_URL")
    if url.startswith(SENTINEL_SCHEME):
        try:
            parse_sentinel_url(url)
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL: {exc}") from None
    return url


def _redis_prefix(environ: Mapping[str, str]) -> str:
    prefix = environ.get("BILLINGWATCH_REDIS_PREFIX", "billingwatch")
    try:
        check_prefix(prefix)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return prefix


def _web_config(environ: Mapping[str, str]) -> WebConfig | None:
    path = environ.get("BILLINGWATCH_WEB_CONFIG_FILE", "").strip()
    if not path:
        return None
    try:
        return load_web_config(path)
    except WebConfigError as exc:
        raise ConfigError(f"BILLINGWATCH_WEB_CONFIG_FILE: {exc}") from None


def _accounts(environ: Mapping[str, str], secrets: tuple[str, ...]) -> tuple[Account, ...]:
    path = environ.get("BILLINGWATCH_ACCOUNTS_FILE", "").strip()
    if not path:
        return ()
    if secrets:
        # Which account would it sign for? Each account names its own secret files.
        raise ConfigError("STRIPE_WEBHOOK_SECRET is set beside BILLINGWATCH_ACCOUNTS_FILE: give each account's "
                          "secrets in the file (webhook_secret_files) and unset STRIPE_WEBHOOK_SECRET")
    if _flag(environ, "BILLINGWATCH_INSECURE_SKIP_SIGNATURE"):
        raise ConfigError("BILLINGWATCH_INSECURE_SKIP_SIGNATURE cannot be used with BILLINGWATCH_ACCOUNTS_FILE: "
                          "without signatures an event could not be told to belong to its account")
    try:
        return load_accounts(path)
    except AccountsError as exc:
        raise ConfigError(f"BILLINGWATCH_ACCOUNTS_FILE: {exc}") from None


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    webhook_secrets: tuple[str, ...] = ()
    insecure_skip_signature: bool = False
    signature_tolerance: int = 300
    max_body_bytes: int = 1024 * 1024
    redis_url: str = ""
    redis_prefix: str = "billingwatch"
    # BILLINGWATCH_REDIS_ALLOW_EVICTION: a maxmemory-policy other than noeviction is a warning, not a refusal.
    redis_allow_eviction: bool = False
    # WAIT for this many replicas after each recorded event before 2xx (0: no wait; docs/redis.md).
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 1000
    dedup_ttl: int = 35 * DAY
    subscription_ttl: int = 400 * DAY
    lapse_grace: int = 2 * DAY
    anomaly_log_size: int = 1000
    event_log_size: int = 5000  # lines of the recent-events log (/api/events, /events)
    quarantine_size: int = 1000  # events the quarantine keeps (recording/quarantine.py), the oldest dropped first
    api_token: str = ""
    currencies: tuple[str, ...] = ()  # exposed at 0 from start in every per-currency family
    # BILLINGWATCH_PLANS: price or product id → plan name, for MRR by plan (unmapped: other).
    plans: Mapping[str, str] = field(default_factory=dict)
    # Host header names the exporter answers to; empty: access.default_hosts(host).
    allowed_hosts: tuple[str, ...] = ()
    # Request limits (issue 11 item 1): headers, concurrency and read deadlines.
    max_header_bytes: int = 16 * 1024
    max_connections: int = 256
    read_timeout: int = 10
    keep_alive_timeout: int = 5
    detector_env: Mapping[str, str] = field(default_factory=dict)
    # Pushed alerts (notify/alertmanager.py): none without Alertmanager URLs.
    alertmanager_urls: tuple[str, ...] = ()
    external_url: str = ""  # the exporter as people's browsers reach it; "" is http://localhost:<port>
    runbook_url: str = ""  # "" is the rules config's default runbook base
    # The rules' anomaly window (1h) plus 5 min: the pushed alert outlasts the rule's alert it inhibits.
    alert_resolve_seconds: int = 3900
    # BILLINGWATCH_WEB_CONFIG_FILE (http/web_config.py): sign-in users and HTTPS; None: neither.
    web_config: WebConfig | None = None
    # BILLINGWATCH_ACCOUNTS_FILE (accounts.py); empty: the one account `default` (see `accounts`).
    accounts_file: tuple[Account, ...] = ()
    # One account's settings (for_account): livemode events are refused, as with a placeholder secret.
    test_only: bool = False

    def __repr__(self) -> str:  # never print secrets
        return f"Settings(host={self.host!r}, port={self.port}, store={'redis' if self.redis_url else 'memory'})"

    @property
    def plan_names(self) -> tuple[str, ...]:
        """The plan label's values: the configured names and other."""
        return tuple(sorted({*self.plans.values(), OTHER_PLAN}))

    @property
    def accounts(self) -> tuple[Account, ...]:
        """The configured accounts; without an accounts file, `default` with STRIPE_WEBHOOK_SECRET."""
        return self.accounts_file or (Account(DEFAULT_ACCOUNT, self.webhook_secrets),)

    def for_account(self, account: Account) -> "Settings":
        """These settings as one account's webhook and store see them: its secrets, its prefix."""
        return replace(self, webhook_secrets=account.webhook_secrets, test_only=account.test_only,
                       redis_prefix=account.prefix(self.redis_prefix))

    def check(self) -> None:
        # Detector thresholds are checked by whoever builds the detectors (billingwatch.startup).
        if not self.webhook_secrets and not self.insecure_skip_signature and not self.accounts_file:
            raise ConfigError(
                "STRIPE_WEBHOOK_SECRET is not set: give the endpoint's signing secret (whsec_...), "
                "or BILLINGWATCH_INSECURE_SKIP_SIGNATURE=1 for local development only"
            )


def from_env(environ: Mapping[str, str] = os.environ) -> Settings:
    secrets = tuple(s.strip() for s in _secret(environ, "STRIPE_WEBHOOK_SECRET").split(",") if s.strip())
    redis_url = _redis_url(environ)
    wait_replicas = env_int(environ, "BILLINGWATCH_REDIS_WAIT_REPLICAS", 0, 0, 100)
    if wait_replicas and not redis_url:
        raise ConfigError("BILLINGWATCH_REDIS_WAIT_REPLICAS needs REDIS_URL: the in-process store has no replicas")
    if wait_replicas and redis_url.partition("://")[0].lower().endswith("+cluster"):
        # WAIT must run on the connection that ran the script, on the slot's master; a cluster
        # client routes a keyless WAIT wherever it likes.
        raise ConfigError("BILLINGWATCH_REDIS_WAIT_REPLICAS is not supported with a Redis Cluster (redis+cluster://)")
    return Settings(
        host=environ.get("BILLINGWATCH_HOST", "127.0.0.1"),
        port=env_int(environ, "BILLINGWATCH_PORT", DEFAULT_PORT, 1, 65535),
        webhook_secrets=secrets,
        insecure_skip_signature=_flag(environ, "BILLINGWATCH_INSECURE_SKIP_SIGNATURE"),
        signature_tolerance=env_int(environ, "BILLINGWATCH_SIGNATURE_TOLERANCE_SECONDS", 300, 1, 3600),
        max_body_bytes=env_int(environ, "BILLINGWATCH_MAX_BODY_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
        redis_url=redis_url,
        redis_prefix=_redis_prefix(environ),
        redis_allow_eviction=_flag(environ, "BILLINGWATCH_REDIS_ALLOW_EVICTION"),
        redis_wait_replicas=wait_replicas,
        # Below the client's 2 s socket timeout, so a WAIT that times out is answered, not cut off.
        redis_wait_timeout_ms=env_int(environ, "BILLINGWATCH_REDIS_WAIT_TIMEOUT_MS", 1000, 1, 1500),
        # Ten years at most: far beyond any use, far below what makes Redis' EXPIRE overflow.
        dedup_ttl=env_int(environ, "BILLINGWATCH_DEDUP_TTL_SECONDS", 35 * DAY, 7 * DAY, 3650 * DAY),
        subscription_ttl=env_int(environ, "BILLINGWATCH_SUBSCRIPTION_TTL_SECONDS", 400 * DAY, 32 * DAY, 3650 * DAY),
        lapse_grace=env_int(environ, "BILLINGWATCH_LAPSE_GRACE_SECONDS", 2 * DAY, 0, 365 * DAY),
        anomaly_log_size=env_int(environ, "BILLINGWATCH_ANOMALY_LOG_SIZE", 1000, 1, 100_000),
        event_log_size=env_int(environ, "BILLINGWATCH_EVENT_LOG_SIZE", 5000, 1, 100_000),
        quarantine_size=env_int(environ, "BILLINGWATCH_QUARANTINE_SIZE", 1000, 1, 100_000),
        api_token=_secret(environ, "BILLINGWATCH_API_TOKEN"),
        currencies=_currencies(environ, "BILLINGWATCH_CURRENCIES"),
        plans=_plans(environ, "BILLINGWATCH_PLANS"),
        allowed_hosts=_hosts(environ, "BILLINGWATCH_ALLOWED_HOSTS"),
        max_header_bytes=env_int(environ, "BILLINGWATCH_MAX_HEADER_BYTES", 16 * 1024, 4096, 1024 * 1024),
        max_connections=env_int(environ, "BILLINGWATCH_MAX_CONNECTIONS", 256, 1, 100_000),
        read_timeout=env_int(environ, "BILLINGWATCH_READ_TIMEOUT_SECONDS", 10, 1, 600),
        keep_alive_timeout=env_int(environ, "BILLINGWATCH_KEEP_ALIVE_TIMEOUT_SECONDS", 5, 1, 600),
        detector_env={k: v for k, v in environ.items() if k.startswith("BILLINGWATCH_DETECTOR_")},
        alertmanager_urls=_urls(environ, "BILLINGWATCH_ALERTMANAGER_URLS"),
        external_url=_url("BILLINGWATCH_EXTERNAL_URL", environ["BILLINGWATCH_EXTERNAL_URL"].strip())
        if environ.get("BILLINGWATCH_EXTERNAL_URL", "").strip() else "",
        runbook_url=_url("BILLINGWATCH_RUNBOOK_URL", environ["BILLINGWATCH_RUNBOOK_URL"].strip())
        if environ.get("BILLINGWATCH_RUNBOOK_URL", "").strip() else "",
        alert_resolve_seconds=env_int(environ, "BILLINGWATCH_ALERT_RESOLVE_SECONDS", 3900, 60, 30 * DAY),
        web_config=_web_config(environ),
        accounts_file=_accounts(environ, secrets),
    )
