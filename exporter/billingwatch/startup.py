"""What the exporter refuses at start-up: composes the settings with the detectors they configure.

Settings are data (config.py knows nothing of detectors); whoever starts the app checks both here.
"""

from billingwatch.config import Settings
from billingwatch.detectors import build_detectors


def check_settings(settings: Settings) -> None:
    """Raise ConfigError for a bad detector threshold or missing webhook secret: a start-up error, not a
    traceback on the first event."""
    build_detectors(settings.detector_env)
    settings.check()
