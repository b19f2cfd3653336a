"""The `account` label (BILLINGWATCH_ACCOUNTS_FILE, accounts.py), added in one place.

Each account's collectors (its store's families, its webhook counters) are collected apart and
every sample gets `account="<name>"`; families of one name are merged, so the exposition declares
each family once whatever the number of accounts. A family added to the catalogue gets the label
with no code of its own, and its zero series exist in every account.
"""

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

ACCOUNT_LABEL = "account"


class AccountLabelled(Collector):
    """The families of (account name, collectors) pairs, each sample labelled with its account."""

    def __init__(self, accounts: Sequence[tuple[str, Iterable[Collector]]]) -> None:
        self._accounts = [(name, list(collectors)) for name, collectors in accounts]

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for account, collectors in self._accounts:
            for collector in collectors:
                for family in collector.collect():
                    target = merged.get(family.name)
                    if target is None:
                        target = merged[family.name] = Metric(family.name, family.documentation, family.type,
                                                              family.unit)
                    target.samples.extend(
                        sample._replace(labels={**sample.labels, ACCOUNT_LABEL: account}) for sample in family.samples
                    )
        yield from merged.values()
