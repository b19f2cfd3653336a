"""The uvicorn entry point: `billingwatch.server:app` (a factory reading the environment)."""

import sys
from types import FrameType

from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE, Config

from billingwatch.config import ConfigError, Settings, from_env
from billingwatch.http.app import create_app
from billingwatch.startup import check_settings
from billingwatch.store.redis_startup import refuse_evicting_redis


def uvicorn_workers(frame: FrameType | None) -> int:
    """How many worker processes the uvicorn that calls this factory runs (1 when not called by uvicorn).

    uvicorn calls the factory from Config.load() in each worker; its Config knows --workers (or
    WEB_CONCURRENCY). Reading it here refuses the setup however the app was started.
    """
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, Config):
            return int(owner.workers or 1)
        frame = frame.f_back
    return 1


def checked_settings(workers: int) -> Settings:
    settings = from_env()
    check_settings(settings)
    if workers > 1 and not settings.redis_url:
        raise ConfigError(
            f"{workers} worker processes need REDIS_URL: the in-process store is not shared between processes"
        )
    return settings


def app() -> Starlette:
    try:
        settings = checked_settings(uvicorn_workers(sys._getframe(1)))
        refuse_evicting_redis(settings)
    except ConfigError as exc:
        # One line, no traceback; uvicorn's supervisor stops every worker on this exit code.
        print(f"billingwatch: {exc}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    return create_app(settings)
