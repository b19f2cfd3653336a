"""`--account NAME` of replay, backfill and reconcile: which account of BILLINGWATCH_ACCOUNTS_FILE
they record into (its store prefix, its webhook endpoint and secret, its api_key_file)."""

import argparse
from pathlib import Path

from billingwatch.accounts import DEFAULT_ACCOUNT, Account
from billingwatch.config import ConfigError, Settings


def add_account_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--account", metavar="NAME", default=None,
        help="the account of BILLINGWATCH_ACCOUNTS_FILE to record into (default: the one named default)",
    )


def chosen_account(settings: Settings, name: str | None) -> Account:
    """The account `--account` names; without it, `default` (the only one without an accounts file)."""
    accounts = {account.name: account for account in settings.accounts}
    wanted = name or DEFAULT_ACCOUNT
    if wanted not in accounts:
        if name is None:
            raise ConfigError("BILLINGWATCH_ACCOUNTS_FILE names no account default: choose one with --account NAME "
                              f"({', '.join(accounts)})")
        raise ConfigError(f"--account {name[:40]!r} is not in BILLINGWATCH_ACCOUNTS_FILE ({', '.join(accounts)})")
    return accounts[wanted]


def account_api_key(settings: Settings, name: str | None) -> str | None:
    """The account's api_key_file content when it has one (else None: STRIPE_API_KEY is used)."""
    if not settings.accounts_file:
        return None
    account = chosen_account(settings, name)
    if not account.api_key_file:
        return None
    try:
        return Path(account.api_key_file).read_text().strip() or None
    except OSError as exc:
        raise ConfigError(f"account {account.name}: cannot read api_key_file: {exc.strerror}") from None
