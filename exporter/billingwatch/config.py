"""Settings from the environment (and `billingwatch serve` flags). Secrets may come from *_FILE."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from billingwatch.money import is_currency

DEFAULT_PORT = 9786
DAY = 86400


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it, never its secret value."""


def _secret(environ: Mapping[str, str], name: str) -> str:
    """A secret from NAME, or from the file NAME_FILE names (Docker/Kubernetes secrets)."""
    value = environ.get(name, "")
    path = environ.get(name + "_FILE", "")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return value


def _int(environ: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return value


def _currencies(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated currency codes, lower-cased as Stripe sends them."""
    codes = tuple(c.strip().lower() for c in environ.get(name, "").split(",") if c.strip())
    for code in codes:
        if not is_currency(code):
            raise ConfigError(f"{name}: {code!r} is not a three-letter currency code (e.g. usd,eur)")
    return tuple(dict.fromkeys(codes))


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
    dedup_ttl: int = 35 * DAY
    subscription_ttl: int = 400 * DAY
    lapse_grace: int = 2 * DAY
    anomaly_log_size: int = 1000
    api_token: str = ""
    currencies: tuple[str, ...] = ()  # exposed at 0 from start in every per-currency family
    detector_env: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print secrets
        return f"Settings(host={self.host!r}, port={self.port}, store={'redis' if self.redis_url else 'memory'})"

    def check(self) -> None:
        if not self.webhook_secrets and not self.insecure_skip_signature:
            raise ConfigError(
                "STRIPE_WEBHOOK_SECRET is not set: give the endpoint's signing secret (whsec_...), "
                "or BILLINGWATCH_INSECURE_SKIP_SIGNATURE=1 for local development only"
            )


def from_env(environ: Mapping[str, str] = os.environ) -> Settings:
    secrets = tuple(s.strip() for s in _secret(environ, "STRIPE_WEBHOOK_SECRET").split(",") if s.strip())
    return Settings(
        host=environ.get("BILLINGWATCH_HOST", "127.0.0.1"),
        port=_int(environ, "BILLINGWATCH_PORT", DEFAULT_PORT, 1),
        webhook_secrets=secrets,
        insecure_skip_signature=_flag(environ, "BILLINGWATCH_INSECURE_SKIP_SIGNATURE"),
        signature_tolerance=_int(environ, "BILLINGWATCH_SIGNATURE_TOLERANCE_SECONDS", 300, 1),
        max_body_bytes=_int(environ, "BILLINGWATCH_MAX_BODY_BYTES", 1024 * 1024, 1024),
        redis_url=_secret(environ, "REDIS_URL"),
        redis_prefix=environ.get("BILLINGWATCH_REDIS_PREFIX", "billingwatch"),
        dedup_ttl=_int(environ, "BILLINGWATCH_DEDUP_TTL_SECONDS", 35 * DAY, 7 * DAY),
        subscription_ttl=_int(environ, "BILLINGWATCH_SUBSCRIPTION_TTL_SECONDS", 400 * DAY, 32 * DAY),
        lapse_grace=_int(environ, "BILLINGWATCH_LAPSE_GRACE_SECONDS", 2 * DAY, 0),
        anomaly_log_size=_int(environ, "BILLINGWATCH_ANOMALY_LOG_SIZE", 1000, 1),
        api_token=_secret(environ, "BILLINGWATCH_API_TOKEN"),
        currencies=_currencies(environ, "BILLINGWATCH_CURRENCIES"),
        detector_env={k: v for k, v in environ.items() if k.startswith("BILLINGWATCH_DETECTOR_")},
    )
