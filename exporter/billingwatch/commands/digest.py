"""`billingwatch digest`: one day (or week) of billing health as an email, from cron or the
compose `digest` service. Figures from Prometheus (digest_figures), words from the templates
(digest_render), sent over SMTP with Alertmanager's settings style, or printed with --stdout.
docs/digest.md lists the settings.
"""

import argparse
import logging
import os
import smtplib
import ssl
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import httpx

from billingwatch.commands import digest_render as render
from billingwatch.commands.digest_figures import (
    Prometheus,
    Report,
    Unavailable,
    Window,
    anomaly_records,
    collect,
    parse_period,
)
from billingwatch.config import ConfigError, file_setting

log = logging.getLogger("billingwatch.digest")
PREFIX = "BILLINGWATCH_DIGEST_"
LOOPBACK = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Mail:
    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    username: str
    password: str
    require_tls: bool

    def __repr__(self) -> str:  # never print the password
        return f"Mail(smarthost={self.host}:{self.port}, to={self.to})"


def add_digest(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    env = os.environ.get
    parser = sub.add_parser(
        "digest", help="email a summary of the last day (or --period) of billing health",
        description="Summarise a period of billing health (charges and failure ratio, refunds, disputes, "
        "early fraud warnings, MRR against its 7-day average, subscriptions, anomalies by detector, "
        "alerts that fired) from Prometheus and the exporter's anomaly log, and send it as an email "
        f"(SMTP settings: {PREFIX}* environment variables, docs/digest.md) or print it with --stdout.",
    )
    parser.add_argument("--period", default=env(PREFIX + "PERIOD", "24h"),
                        help="length of the period ending at --at: 24h (default), 7d, ...")
    parser.add_argument("--at", default=None, metavar="TIME",
                        help="end of the period: unix seconds or ISO 8601 with a time zone (default: now)")
    parser.add_argument("--prometheus-url", default=env(PREFIX + "PROMETHEUS_URL", "http://localhost:9090"))
    parser.add_argument("--exporter-url", default=env(PREFIX + "EXPORTER_URL", "http://localhost:9786"),
                        help="where the digest reads /api/anomalies (token: BILLINGWATCH_API_TOKEN(_FILE))")
    parser.add_argument("--link-url", default=env(PREFIX + "LINK_URL"),
                        help="the exporter's address in the email's links, as readers reach it "
                        "(default: --exporter-url)")
    parser.add_argument("--livemode", default=env(PREFIX + "LIVEMODE", "true"), choices=("true", "false"),
                        help="live-mode figures (default) or test-mode figures")
    parser.add_argument("--selector", default=env(PREFIX + "SELECTOR", 'job="billingwatch"'),
                        help="label matchers of BillingWatch's scrape targets, as in the rules config")
    parser.add_argument("--stdout", action="store_true", help="print the plain-text digest instead of mailing it")
    parser.set_defaults(run=digest)


def digest(args: argparse.Namespace) -> int:
    window = Window(end=end_time(args.at), seconds=parse_period(args.period), livemode=args.livemode,
                    selector=args.selector)
    for name in ("prometheus_url", "exporter_url", "link_url"):
        url = getattr(args, name)
        if url is not None and not url.startswith(("http://", "https://")):
            raise ConfigError(f"--{name.replace('_', '-')} must start with http:// or https://")
    mail = None if args.stdout else mail_settings(os.environ)
    token = secret(os.environ, "BILLINGWATCH_API_TOKEN")
    link_url = args.link_url or args.exporter_url
    try:
        with httpx.Client(timeout=30) as client:
            report = collect(Prometheus(args.prometheus_url, client), window)
            try:
                report.records = anomaly_records(client, args.exporter_url, token, window)
            except Unavailable as exc:
                # The figures still stand: send them, and say what is missing.
                log.warning("anomaly details unavailable: %s", exc)
                report.notes.append(f"anomaly details unavailable ({exc})")
        text = render.text(report, link_url, args.prometheus_url)
        if mail is None:
            sys.stdout.write(text)
            return 0
        send(mail, message(mail, report, text, render.html_part(report, link_url, args.prometheus_url)))
    except Unavailable as exc:
        print(f"billingwatch digest: {exc}", file=sys.stderr)
        return 1
    log.info("digest for %s to %s sent to %d recipient(s)", render.utc(window.start), render.utc(window.end),
             len(mail.to))
    return 0


# --at's range: what datetime (the report's dates) and Prometheus' queries can both express.
LATEST_AT = 253402300799  # 9999-12-31T23:59:59Z


def end_time(raw: str | None) -> float:
    if raw is None:
        return time.time()
    seconds = _unix_seconds(raw)
    # float() also reads nan, inf and 1e300: each would fail later, deep in date formatting.
    if not 0 <= seconds <= LATEST_AT:  # False for nan too
        raise ConfigError(f"--at must be a time between 1970 and 9999, got {raw[:40]!r}")
    return seconds


def _unix_seconds(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"--at must be unix seconds or ISO 8601, got {raw[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ConfigError("--at needs a time zone (e.g. 2025-01-31T07:00:00+00:00)")
    return parsed.timestamp()


def secret(environ: Mapping[str, str], name: str) -> str:
    """NAME, or the content of the file NAME_FILE names (an empty file is a ConfigError)."""
    value = file_setting(environ, name)
    return environ.get(name, "") if value is None else value


def mail_settings(environ: Mapping[str, str]) -> Mail:
    """SMTP settings, named after Alertmanager's email settings; a bad one is a ConfigError."""
    def required(key: str) -> str:
        value = environ.get(PREFIX + key, "").strip()
        if not value:
            raise ConfigError(f"{PREFIX}{key} is not set (or use --stdout); see docs/digest.md")
        if "\r" in value or "\n" in value:
            raise ConfigError(f"{PREFIX}{key} must be one line")
        return value

    host, _, port = required("SMARTHOST").rpartition(":")
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{PREFIX}SMARTHOST must be host:port, e.g. smtp.example.com:587")
    sender = required("FROM")
    to = tuple(a.strip() for a in required("TO").split(",") if a.strip())
    for address in (sender, *to):
        if "@" not in address or " " in address:
            raise ConfigError(f"{PREFIX}FROM and {PREFIX}TO must be email addresses, got {address[:60]!r}")
    require_tls = environ.get(PREFIX + "REQUIRE_TLS", "true").strip().lower()
    if require_tls not in ("true", "false"):
        raise ConfigError(f"{PREFIX}REQUIRE_TLS must be true or false")
    username = environ.get(PREFIX + "AUTH_USERNAME", "").strip()
    # Read only when used: compose points the file at a secrets directory a catcher setup leaves empty.
    password = secret(environ, PREFIX + "AUTH_PASSWORD") if username else ""
    if username and not password:
        raise ConfigError(f"{PREFIX}AUTH_USERNAME is set: give the password in {PREFIX}AUTH_PASSWORD_FILE")
    return Mail(host.strip("[]"), int(port), sender, to, username, password, require_tls == "true")


def message(mail: Mail, report: Report, text: str, html: str) -> EmailMessage:
    """multipart/alternative: the plain text first, the HTML preferred by mail readers that show it."""
    msg = EmailMessage()
    msg["Subject"] = render.subject(report)
    msg["From"] = mail.sender
    msg["To"] = ", ".join(mail.to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid("billingwatch-digest")
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def send(mail: Mail, msg: EmailMessage) -> None:
    """As Alertmanager does: implicit TLS on port 465, else STARTTLS when REQUIRE_TLS (refused if
    the server does not offer it); AUTH when a user name is set and the server offers AUTH."""
    context = ssl.create_default_context()
    where = f"SMTP {mail.host}:{mail.port}"
    try:
        client = (smtplib.SMTP_SSL(mail.host, mail.port, timeout=30, context=context) if mail.port == 465
                  else smtplib.SMTP(mail.host, mail.port, timeout=30))
        with client:
            client.ehlo()
            encrypted = mail.port == 465
            if not encrypted and mail.require_tls:
                if not client.has_extn("starttls"):
                    raise Unavailable(f"{where} does not offer STARTTLS and {PREFIX}REQUIRE_TLS is true")
                client.starttls(context=context)
                client.ehlo()
                encrypted = True
            if mail.username and client.has_extn("auth"):
                # Like Go's PLAIN auth in Alertmanager: no password in clear text beyond loopback.
                if not encrypted and mail.host not in LOOPBACK:
                    raise Unavailable(f"{where}: refusing to send the password unencrypted ({PREFIX}REQUIRE_TLS=false)")
                client.login(mail.username, mail.password)
            client.send_message(msg, from_addr=mail.sender, to_addrs=list(mail.to))
    except (OSError, smtplib.SMTPException) as exc:
        raise Unavailable(f"{where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
