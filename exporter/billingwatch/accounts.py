"""BILLINGWATCH_ACCOUNTS_FILE: several Stripe accounts in one exporter (docs/configuration.md#several-stripe-accounts).

Without the file there is one account, `default`, on /webhooks/stripe with STRIPE_WEBHOOK_SECRET.
Each account has its own store prefix: `default` keeps the configured prefix (so a store written
before accounts existed keeps its keys and counts), any other account lives under
`<prefix>:<name>`, whose hash tag {<prefix>:<name>} keeps its keys in a slot of their own.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from billingwatch.setting_files import read_setting_file

DEFAULT_ACCOUNT = "default"
# The configured account's name in a record (pages, /api/*, pushed alerts): `account` is the
# Stripe Connect connected account's (recording/plan.py).
ACCOUNT_FIELD = "account_name"
ACCOUNT_NAME = re.compile(r"[a-z0-9_-]{1,32}")
MAX_ACCOUNTS = 50  # each is a label value of every family
ACCOUNT_KEYS = frozenset({"name", "webhook_secret_files", "api_key_file", "test_only"})


class AccountsError(ValueError):
    """The accounts file is unusable; the message is one line and never holds a secret."""


@dataclass(frozen=True)
class Account:
    name: str
    webhook_secrets: tuple[str, ...]
    test_only: bool = False  # livemode events are refused, as with a placeholder secret
    api_key_file: str = ""  # backfill/reconcile --account NAME

    def __repr__(self) -> str:  # never print secrets
        return f"Account(name={self.name!r}, secrets={len(self.webhook_secrets)}, test_only={self.test_only})"

    def prefix(self, base: str) -> str:
        """This account's store prefix: the base for `default`, `<base>:<name>` for the others."""
        return base if self.name == DEFAULT_ACCOUNT else f"{base}:{self.name}"


def _read(path: Any, what: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise AccountsError(f"{what} must be a file path")
    value = read_setting_file(path, what, AccountsError)
    if not value:
        raise AccountsError(f"{what}: {path} is empty")
    return value


def _account(entry: Any, index: int) -> Account:
    if not isinstance(entry, dict):
        raise AccountsError(f"accounts[{index}] must be a mapping with name and webhook_secret_files")
    unknown = sorted(str(k) for k in entry if k not in ACCOUNT_KEYS)
    if unknown:
        raise AccountsError(f"accounts[{index}]: unknown key {unknown[0]!r} (known: {', '.join(sorted(ACCOUNT_KEYS))})")
    name = entry.get("name")
    if not isinstance(name, str) or not ACCOUNT_NAME.fullmatch(name):
        raise AccountsError(f"accounts[{index}]: name must be 1 to 32 characters of a-z 0-9 _ -")
    files = entry.get("webhook_secret_files")
    if not isinstance(files, list) or not files:
        raise AccountsError(f"account {name}: webhook_secret_files must be a list of one or more files")
    secrets = tuple(dict.fromkeys(_read(f, f"account {name}: webhook_secret_files") for f in files))
    test_only = entry.get("test_only", False)
    if not isinstance(test_only, bool):
        raise AccountsError(f"account {name}: test_only must be true or false")
    api_key_file = entry.get("api_key_file", "")
    if api_key_file:
        _read(api_key_file, f"account {name}: api_key_file")  # unreadable now: refused at start-up, not at backfill
    return Account(name, secrets, test_only, str(api_key_file))


def parse(text: str) -> tuple[Account, ...]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise AccountsError(f"not valid YAML{where}") from None
    if not isinstance(document, dict) or set(document) != {"accounts"}:
        raise AccountsError("the file must hold one key, accounts: a list of accounts")
    entries = document["accounts"]
    if not isinstance(entries, list) or not entries:
        raise AccountsError("accounts must be a list of one or more accounts")
    if len(entries) > MAX_ACCOUNTS:
        raise AccountsError(f"at most {MAX_ACCOUNTS} accounts (got {len(entries)})")
    accounts = [_account(entry, i) for i, entry in enumerate(entries)]
    names: set[str] = set()
    owners: dict[str, str] = {}
    for account in accounts:
        if account.name in names:
            raise AccountsError(f"account {account.name} is named twice")
        names.add(account.name)
        for secret in account.webhook_secrets:
            # One secret in two accounts would let either account's events count in the other.
            if secret in owners:
                raise AccountsError(f"accounts {owners[secret]} and {account.name} share a webhook secret")
            owners[secret] = account.name
    return tuple(accounts)


def load(path: str) -> tuple[Account, ...]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise AccountsError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise AccountsError(f"{path} is not UTF-8 text") from None
    return parse(text)
