"""docs/openapi.json: the OpenAPI document of an app with the default settings (built-in detectors only).

`python -m billingwatch.http.openapi_default > docs/openapi.json`. Apart from openapi.py because it
builds an app: the app imports openapi.py, so openapi.py cannot import the app factory back.
"""

import sys

from billingwatch.config import Settings
from billingwatch.detectors import build_detectors
from billingwatch.http.app import create_app
from billingwatch.http.openapi import Json, document, render
from billingwatch.store import MemoryStore


def default_document() -> Json:
    """The document of an app with the default settings (built-in detectors only): docs/openapi.json."""
    app = create_app(Settings(webhook_secrets=("whsec_placeholder",)), MemoryStore())
    return document(app.routes, [d.name for d in build_detectors({})])


if __name__ == "__main__":
    sys.stdout.write(render(default_document()))
