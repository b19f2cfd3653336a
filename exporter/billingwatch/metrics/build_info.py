"""billingwatch_build_info: the version and the store kind this replica runs."""

import platform
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from billingwatch import __version__
from billingwatch.metrics.families import BUILD_INFO


class BuildInfo(Collector):
    def __init__(self, store_kind: str) -> None:
        self._store_kind = store_kind

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(BUILD_INFO.name, BUILD_INFO.help, labels=list(BUILD_INFO.labels))
        info.add_metric([__version__, platform.python_version(), self._store_kind], 1.0)
        yield info
