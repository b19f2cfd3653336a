"""The uvicorn entry point: `billingwatch.server:app` (a factory reading the environment)."""

import gc
import sys
from types import FrameType

from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE, Config

from billingwatch.config import ConfigError, Settings, from_env
from billingwatch.http.app import create_app
from billingwatch.startup import check_settings
from billingwatch.store.redis_startup import refuse_evicting_redis


def uvicorn_config(frame: FrameType | None) -> Config | None:
    """The Config of the uvicorn that calls this factory (None when not called by uvicorn).

    uvicorn calls the factory from Config.load() in each worker; its Config knows --workers (or
    WEB_CONCURRENCY) and whether it serves TLS. Reading it here refuses the setup however the
    app was started.
    """
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, Config):
            return owner
        frame = frame.f_back
    return None


def checked_settings(workers: int, uvicorn_tls: bool | None = None) -> Settings:
    settings = from_env()
    check_settings(settings)
    if workers > 1 and not settings.redis_url:
        raise ConfigError(
            f"{workers} worker processes need REDIS_URL: the in-process store is not shared between processes"
        )
    if uvicorn_tls is False and settings.web_config is not None and settings.web_config.tls:
        # Passwords would cross the network in clear text while the file says HTTPS.
        raise ConfigError("BILLINGWATCH_WEB_CONFIG_FILE has tls_server_config but uvicorn serves plain HTTP: "
                          "start with `billingwatch serve`, or give uvicorn --ssl-certfile and --ssl-keyfile")
    return settings


def app() -> Starlette:
    try:
        config = uvicorn_config(sys._getframe(1))
        settings = checked_settings(int(config.workers or 1) if config is not None else 1,
                                    bool(config.ssl_certfile) if config is not None else None)
        refuse_evicting_redis(settings)
    except ConfigError as exc:
        # One line, no traceback; uvicorn's supervisor stops every worker on this exit code.
        print(f"billingwatch: {exc}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    application = create_app(settings)
    # Start-up's objects (modules, templates, the app) live as long as the process: the collector
    # need not walk them again on each full collection while requests are served.
    gc.freeze()
    return application
