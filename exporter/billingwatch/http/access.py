"""Who may read customer data (/api/*) or mark a delivery as replayed history, and which Host
names the exporter answers to (README "Security")."""

import hmac
import ipaddress
import socket
from collections.abc import Iterable, Sequence

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

REFUSED = (
    "set BILLINGWATCH_API_TOKEN and send it as 'Authorization: Bearer <token>' "
    "(without a token only direct loopback requests are served)"
)

# Headers a reverse proxy or tunnel adds: a request carrying one did not come from a local
# operator, even when its TCP peer is a proxy on 127.0.0.1.
PROXY_HEADERS = (
    "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
    "x-real-ip", "x-client-ip", "x-cluster-client-ip", "x-original-forwarded-for", "cf-connecting-ip",
    "true-client-ip", "fastly-client-ip", "cdn-loop", "via",
)

_PROXY_HEADER_NAMES = frozenset(name.encode() for name in PROXY_HEADERS)  # as ASGI gives them: lower-case bytes

# Scope keys http/sign_in.py sets when BILLINGWATCH_WEB_CONFIG_FILE has users.
SIGN_IN_REQUIRED = "billingwatch.sign_in_required"
SIGNED_IN_USER = "billingwatch.user"

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_BINDS = ("", "0.0.0.0", "::", "[::]")


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def direct_loopback(request: Request) -> bool:
    """The TCP peer is this machine and no proxy says it relayed someone else's request."""
    peer = request.client.host if request.client else None
    # One pass over the raw headers (the replay path checks this for every event it posts).
    return is_loopback(peer) and _PROXY_HEADER_NAMES.isdisjoint(name for name, _ in request.headers.raw)


def bearer_matches(request: Request, token: str) -> bool:
    return bearer_token_matches(request.headers.get("authorization", ""), token)


def bearer_token_matches(authorization: str, token: str) -> bool:
    scheme, _, given = authorization.partition(" ")
    # Constant-time: the comparison must not tell an attacker how much of the token they have.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def authorised(request: Request, token: str) -> bool:
    """The one rule for customer data and for the replay header: a user signed in with the web
    configuration file (http/sign_in.py), or the token when one is configured (even on
    loopback), else a direct loopback request unless the web configuration requires sign-in."""
    if request.scope.get(SIGNED_IN_USER) is not None:
        return True
    if token:
        return bearer_matches(request, token)
    return not request.scope.get(SIGN_IN_REQUIRED) and direct_loopback(request)


def host_pattern(entry: str) -> str:
    """An allowlist entry as it is matched: lower case, IPv6 literals in brackets; raises
    ValueError for what cannot match a Host header (a port, a misplaced wildcard)."""
    entry = entry.strip().lower()
    if not entry:
        raise ValueError("empty host name")
    bare = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
    if ":" in bare:
        try:
            return f"[{ipaddress.IPv6Address(bare)}]"
        except ValueError:
            raise ValueError(f"{entry!r}: give host names without a port") from None
    if "*" in entry[1:] or (entry.startswith("*") and entry != "*" and not entry.startswith("*.")):
        raise ValueError(f"{entry!r}: a wildcard must look like '*.example.com'")
    return entry


def default_hosts(bind_host: str) -> tuple[str, ...]:
    """Loopback names, plus the bind address when it is a specific one; on a wildcard bind
    (the container image), this machine's own host name, which no attacker's DNS can claim."""
    extra = socket.gethostname() if bind_host in WILDCARD_BINDS else bind_host
    hosts = list(LOOPBACK_HOSTS)
    try:
        pattern = host_pattern(extra)
    except ValueError:
        pattern = ""
    if pattern and pattern not in hosts:
        hosts.append(pattern)
    return tuple(hosts)


def host_of(header: str | None) -> str | None:
    """The host part of a Host header, lower case, IPv6 in brackets; None when malformed."""
    if not header:
        return None
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        host, rest = header[: end + 1], header[end + 1:]
    else:
        host, colon, port = header.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isascii() and rest[1:].isdigit()):
        return None
    return host or None


def host_allowed(header: str | None, patterns: Iterable[str]) -> bool:
    host = host_of(header)
    if host is None:
        return False
    for pattern in patterns:
        if pattern == "*" or host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


class HostAllowlist:
    """Starlette's TrustedHostMiddleware, answering in the exporter's one-line JSON error
    format: a page on another site that rebinds its name to this host gets 400, no data."""

    def __init__(self, app: ASGIApp, hosts: Sequence[str]) -> None:
        self.app = app
        self.hosts = tuple(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not host_allowed(Headers(scope=scope).get("host"), self.hosts):
            response = JSONResponse(
                {"error": "Host header not allowed; list this name in BILLINGWATCH_ALLOWED_HOSTS"}, status_code=400
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
