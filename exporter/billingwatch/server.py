"""The uvicorn entry point: `billingwatch.server:app` (a factory reading the environment)."""

from starlette.applications import Starlette

from billingwatch.app import create_app
from billingwatch.config import from_env


def app() -> Starlette:
    settings = from_env()
    settings.check()
    return create_app(settings)
