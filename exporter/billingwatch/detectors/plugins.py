"""Detectors from installed packages: the `billingwatch.detectors` entry-point group.

An installed package is trusted like any other dependency (it runs in the exporter's process
either way), so by default every detector registered in the group is loaded.
BILLINGWATCH_DETECTOR_PLUGINS narrows that: `none` loads none, a comma-separated list of names
loads exactly those (each must be installed). The entry-point name is the detector's name.
Anything wrong with a plugin is a one-line ConfigError at start-up, not a traceback.
"""

import functools
import sys
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from billingwatch.config import ConfigError
from billingwatch.detectors.base import NAME

GROUP = "billingwatch.detectors"
SETTING = "BILLINGWATCH_DETECTOR_PLUGINS"


@functools.lru_cache(maxsize=8)
def _registered(path: tuple[str, ...]) -> tuple[EntryPoint, ...]:
    """The group's entry points as found on `path` (sys.path): scanning every installed
    distribution takes milliseconds, and the detectors are built more than once per process."""
    return tuple(sorted(entry_points(group=GROUP), key=lambda ep: (ep.name, ep.value)))


def wanted(environ: Mapping[str, str]) -> frozenset[str] | None:
    """The plugin names to load; None: every installed one."""
    raw = environ.get(SETTING, "").strip()
    if raw.lower() in ("", "all"):
        return None
    if raw.lower() == "none":
        return frozenset()
    names = frozenset(n.strip() for n in raw.split(",") if n.strip())
    for name in sorted(names):
        if not NAME.fullmatch(name):
            raise ConfigError(f"{SETTING}: {name!r} is not a detector name (or use all / none)")
    return names


def _origin(ep: EntryPoint) -> str:
    package = ep.dist.name if ep.dist is not None else "unknown package"
    return f"plugin {ep.name} = {ep.value} from {package}"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_plugins(environ: Mapping[str, str]) -> list[tuple[type[Any], str]]:
    """The plugin detector classes to use, each with where it came from (for error messages)."""
    names = wanted(environ)
    if names == frozenset():
        return []
    loaded: list[tuple[type[Any], str]] = []
    seen: dict[str, str] = {}
    for ep in _registered(tuple(sys.path)):
        if names is not None and ep.name not in names:
            continue
        origin = _origin(ep)
        if ep.name in seen:
            raise ConfigError(f"detector {ep.name}: registered twice ({seen[ep.name]}; {origin})")
        seen[ep.name] = origin
        try:
            cls = ep.load()
        except Exception as exc:  # whatever its import raises is the plugin's fault: say so in one line
            raise ConfigError(f"{origin}: cannot load: {one_line(exc)}") from None
        if getattr(cls, "name", None) != ep.name:
            raise ConfigError(f"{origin}: the entry-point name must be the detector's name "
                              f"({getattr(cls, 'name', None)!r})")
        loaded.append((cls, origin))
    missing = sorted((names or frozenset()) - seen.keys())
    if missing:
        installed = ", ".join(sorted({ep.name for ep in _registered(tuple(sys.path))})) or "none"
        raise ConfigError(f"{SETTING}: not installed: {', '.join(missing)} (installed: {installed})")
    return loaded
