"""`billingwatch web-config`: print a web configuration file (BILLINGWATCH_WEB_CONFIG_FILE, the
exporter-toolkit format) with one user and the bcrypt hash of their password, as
`htpasswd -nBC 10` would make it. The password comes from BILLINGWATCH_WEB_PASSWORD(_FILE) or,
when neither is set, a prompt: never from the command line, where `ps` would show it."""

import argparse
import getpass
import os
import sys

import bcrypt
import yaml

from billingwatch.config import ConfigError, secret
from billingwatch.http.web_config import WebConfigError, check_user_name

PASSWORD_ENV = "BILLINGWATCH_WEB_PASSWORD"
COST = 10  # exporter-toolkit's documented cost: ~50-100 ms a check, once a minute per credential (cached)
MIN_PASSWORD = 12


def add_web_config(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser("web-config", help="print a BILLINGWATCH_WEB_CONFIG_FILE with one user (bcrypt)")
    parser.add_argument("--user", default="admin", help="the user name (default admin)")
    parser.add_argument("--tls-cert-file", default="", help="also serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key-file", default="", help="... and this private key (PEM)")
    parser.set_defaults(run=web_config)


def web_config(args: argparse.Namespace) -> int:
    try:
        check_user_name(args.user)
    except WebConfigError as exc:
        raise ConfigError(f"--user: {exc}") from None
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        raise ConfigError("give both --tls-cert-file and --tls-key-file, or neither")
    password = secret(os.environ, PASSWORD_ENV)
    if not password:
        if not sys.stdin.isatty():
            raise ConfigError(f"set {PASSWORD_ENV} (or {PASSWORD_ENV}_FILE), or run on a terminal to be asked")
        password = getpass.getpass(f"password for {args.user}: ")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"{PASSWORD_ENV}: use at least {MIN_PASSWORD} characters (e.g. `openssl rand -hex 16`)")
    if len(password.encode()) > 72:
        raise ConfigError(f"{PASSWORD_ENV}: bcrypt reads at most 72 bytes of a password")
    document: dict[str, object] = {
        "basic_auth_users": {args.user: bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=COST)).decode()}}
    if args.tls_cert_file:
        document["tls_server_config"] = {"cert_file": args.tls_cert_file, "key_file": args.tls_key_file}
    sys.stdout.write(yaml.safe_dump(document, sort_keys=False))
    return 0
