"""Sign-in with the web configuration file's users (http/web_config.py): HTTP Basic on every
route but Stripe's webhook and the probes; the bearer token keeps working for scripts.

bcrypt is slow by design (~50-100 ms at cost 10), so a verified credential is remembered for a
minute, keyed by a keyed hash of user and password (as exporter-toolkit caches): a browser
sends the credential with every request, and Prometheus with every scrape. Verification runs
in a worker thread, so a burst of sign-ins does not stall the event loop the webhook shares,
and at most BCRYPT_AT_ONCE at a time, so a flood of wrong passwords costs at most that many
cores (the rest wait, within the connection limit).
"""

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable

import anyio
import bcrypt
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from billingwatch.http.access import SIGN_IN_REQUIRED, SIGNED_IN_USER, bearer_token_matches

REALM = "BillingWatch"
CACHE_SECONDS = 60.0
CACHE_SIZE = 256
BCRYPT_AT_ONCE = 2
# Compared against when the user is unknown, so a wrong name costs what a wrong password does.
_DUMMY_HASH = bcrypt.hashpw(b"billingwatch", bcrypt.gensalt(rounds=10))


def exempt(method: str, path: str) -> bool:
    """Stripe signs its deliveries (it cannot sign in), and the orchestrator's probes carry no credentials."""
    return (method == "POST" and (path == "/webhooks/stripe" or path.startswith("/webhooks/stripe/"))) \
        or path in ("/health", "/ready")


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if colon else None


class Verifier:
    """user/password against the bcrypt hashes, with a short cache of successes."""

    def __init__(self, users: dict[str, bytes], clock: Callable[[], float] = time.monotonic) -> None:
        self._users = users
        self._clock = clock
        self._key = os.urandom(32)  # the cache holds no password, nor anything to test guesses on offline
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self._checks: anyio.Semaphore | None = None  # made in the event loop that uses it

    def _cache_key(self, user: str, password: str) -> bytes:
        return hmac.new(self._key, user.encode() + b"\0" + password.encode(), hashlib.sha256).digest()

    def _check(self, user: str, password: str) -> bool:
        hashed = self._users.get(user, _DUMMY_HASH)
        try:
            return bcrypt.checkpw(password.encode(), hashed) and user in self._users
        except ValueError:  # bcrypt 5 refuses passwords over 72 bytes: no hash here matches one
            return False

    async def verify(self, user: str, password: str) -> bool:
        key = self._cache_key(user, password)
        now = self._clock()
        expiry = self._verified.get(key)
        if expiry is not None and expiry > now:
            return True
        if self._checks is None:
            self._checks = anyio.Semaphore(BCRYPT_AT_ONCE)
        async with self._checks:
            if not await run_in_threadpool(self._check, user, password):
                return False
        self._verified[key] = now + CACHE_SECONDS
        self._verified.move_to_end(key)
        while len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
        return True


def challenge() -> JSONResponse:
    return JSONResponse(
        {"error": "sign in: HTTP Basic as a user of BILLINGWATCH_WEB_CONFIG_FILE, or a bearer token"},
        status_code=401, headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
    )


class SignIn:
    """Marks every request as needing sign-in (the loopback exemption of http/access.py ends),
    records the signed-in user in the scope, and answers 401 before any route that needs it."""

    def __init__(self, app: ASGIApp, verifier: Verifier, api_token: str) -> None:
        self.app = app
        self.verifier = verifier
        self.api_token = api_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[SIGN_IN_REQUIRED] = True
        authorization = Headers(scope=scope).get("authorization", "")
        credentials = basic_credentials(authorization)
        if credentials is not None and await self.verifier.verify(*credentials):
            scope[SIGNED_IN_USER] = credentials[0]
        elif not exempt(scope["method"], scope["path"]) and not (
                self.api_token and bearer_token_matches(authorization, self.api_token)):
            await challenge()(scope, receive, send)
            return
        await self.app(scope, receive, send)
