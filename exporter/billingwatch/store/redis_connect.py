"""The Redis client REDIS_URL names: one server (redis://, rediss://, unix://), a Redis Cluster
through any of its nodes (redis+cluster://, rediss+cluster://), or the master a set of Sentinels
names (redis+sentinel://), followed across failovers.

    redis+sentinel://[[user]:password@]host1[:26379][,host2[:port]...]/master_name[/db][?sentinel_password=...]

The password (URL-encoded) is the master's and the replicas'; `sentinel_password` is for Sentinels
that require one (`requirepass` in sentinel.conf). Error messages never repeat the URL: it holds secrets.
"""

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, ConnectionPool, parse_url
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection

from billingwatch.store.redis_packing import packed

SENTINEL_SCHEME = "redis+sentinel://"
# REDIS_URL of a Redis Cluster: any node of it; the client learns the slot map from there.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SENTINEL_PORT = 26379
# A dead server is noticed within seconds; health checks catch connections a failover left half-open.
TIMEOUT = 2.0
HEALTH_CHECK_INTERVAL = 15


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def _address(text: str) -> tuple[str, int]:
    host, port = text, str(SENTINEL_PORT)
    if text.startswith("["):  # [::1]:26379
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("a Sentinel address must be host or host:port")
    return host, int(port)


def parse_sentinel_url(url: str) -> SentinelURL:
    """The parts of a redis+sentinel:// URL; ValueError (never quoting the URL) when malformed."""
    rest = url.removeprefix(SENTINEL_SCHEME)
    rest, _, query = rest.partition("?")
    userinfo, _, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    parts = path.strip("/").split("/") if path.strip("/") else []
    if not hosts or not 1 <= len(parts) <= 2:
        raise ValueError("a Sentinel URL is redis+sentinel://[:password@]host1:26379,host2:26379/master_name[/db]")
    if len(parts) == 2 and not (parts[1].isascii() and parts[1].isdigit()):
        raise ValueError("the database in a Sentinel URL must be a number")
    options = parse_qs(query, keep_blank_values=True)
    if set(options) - {"sentinel_password"}:
        raise ValueError("a Sentinel URL takes only the option sentinel_password")
    username, password = None, None
    if userinfo:
        name, colon, secret = userinfo.partition(":")
        username, password = unquote(name) or None, unquote(secret) if colon else None
    return SentinelURL(
        sentinels=tuple(_address(h.strip()) for h in hosts.split(",")),
        master=unquote(parts[0]),
        db=int(parts[1]) if len(parts) == 2 else 0,
        username=username,
        password=password,
        sentinel_password=options["sentinel_password"][-1] if options else None,
    )


def check_prefix(prefix: str) -> None:
    """ValueError unless the prefix can be the hash tag {prefix} that keeps an event's keys in one
    slot: an empty tag {} tags nothing, so an event's keys would span slots (CROSSSLOT)."""
    if not prefix or "{" in prefix or "}" in prefix:
        raise ValueError("BILLINGWATCH_REDIS_PREFIX must be non-empty and hold no braces ({ or }): it becomes "
                         "the hash tag {prefix} that keeps every key of an event in one Redis Cluster slot")


def is_cluster(url: str) -> bool:
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in CLUSTER_SCHEMES


def connect(url: str) -> tuple["aioredis.Redis | RedisCluster", Sentinel | None]:
    """The client for REDIS_URL, and the Sentinel manager to close with it (None otherwise).

    A cluster client follows MOVED/ASK and reloads the script on a node that lacks it."""
    if is_cluster(url):
        scheme, _, rest = url.partition("://")
        return RedisCluster.from_url(f"{CLUSTER_SCHEMES[scheme.lower()]}://{rest}", socket_timeout=TIMEOUT,
                                     socket_connect_timeout=TIMEOUT), None
    if not url.startswith(SENTINEL_SCHEME):
        # As Redis.from_url, with the URL's connection class (TCP, TLS, Unix socket) packing in C.
        options = parse_url(url)
        options["connection_class"] = packed(options.get("connection_class", Connection))
        pool = ConnectionPool(socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
                              health_check_interval=HEALTH_CHECK_INTERVAL, **options)
        return aioredis.Redis.from_pool(pool), None
    parsed = parse_sentinel_url(url)
    sentinel_options: dict[str, object] = {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}
    if parsed.sentinel_password is not None:
        sentinel_options["password"] = parsed.sentinel_password
    # The pool asks the Sentinels for the master on every new connection, and drops a connection
    # that finds a replica (READONLY) where the master was: after a failover, calls go to the new one.
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        parsed.sentinels, sentinel_kwargs=sentinel_options, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
        health_check_interval=HEALTH_CHECK_INTERVAL, db=parsed.db, username=parsed.username, password=parsed.password,
    )
    return sentinel.master_for(parsed.master, redis_class=aioredis.Redis,
                               connection_class=packed(SentinelManagedConnection)), sentinel
