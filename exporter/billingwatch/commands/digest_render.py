"""The digest as words: sections of lines, filled into one plain-text and one HTML template
(commands/digest_templates/, string.Template). The same lines make both parts."""

import html
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from string import Template
from typing import Any

from billingwatch.anomaly_ref import anomalies_path, anomaly_path
from billingwatch.commands.digest_figures import Report
from billingwatch.money import minor_per_major

# Anomaly record fields named in the digest, in this order.
RECORD_IDS = ("customer", "subscription", "invoice", "charge")
# Alert labels not repeated after the alert's name.
ALERT_LABELS_SHOWN_APART = ("alertname", "detector", "severity", "priority", "service", "job")


@dataclass
class Line:
    text: str
    link: str | None = None
    details: list[str] = field(default_factory=list)


@dataclass
class Section:
    title: str
    lines: list[Line]


def count(value: float) -> str:
    return f"{round(value):,}"


def money(amount: float, currency: str) -> str:
    decimals = {1: 0, 100: 2, 1000: 3}[minor_per_major(currency)]
    return f"{amount:,.{decimals}f} {currency.upper()}"


def utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def mode(livemode: str) -> str:
    return "live mode" if livemode == "true" else "test mode"


def subject(report: Report) -> str:
    anomalies = sum(report.anomalies.values())
    return (f"BillingWatch digest {time.strftime('%Y-%m-%d', time.gmtime(report.window.end))} "
            f"({period_name(report.window.seconds)}, {mode(report.window.livemode)}): "
            f"{count(anomalies)} anomalies, {len(report.alerts)} alerts")


def period_name(seconds: int) -> str:
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def sections(report: Report, link_url: str) -> list[Section]:
    return [charges(report), refunds(report), fraud(report), mrr(report), subscriptions(report),
            anomalies(report, link_url), alerts(report)]


def charges(report: Report) -> Section:
    lines = []
    for currency in sorted(report.charges):
        counts, amounts = report.charges[currency], report.charge_amounts.get(currency, {})
        if not any(counts.values()):
            continue  # exposed at 0, nothing happened
        parts = [f"{count(counts.get(s, 0.0))} {s} ({money(amounts.get(s, 0.0), currency)})"
                 for s in ("succeeded", "failed")]
        if counts.get("pending"):
            parts.append(f"{count(counts['pending'])} pending")
        lines.append(Line(f"{currency.upper()}: {', '.join(parts)}"))
    if not lines:
        lines.append(Line("No charges."))
    ratio = report.failure_ratio
    failed, succeeded = report.outcomes.get("failed", 0.0), report.outcomes.get("succeeded", 0.0)
    if ratio is not None:
        lines.append(Line(f"Failure ratio, all currencies: {ratio:.1%} ({count(failed)} failed of "
                          f"{count(failed + succeeded)})"))
    return Section("Charges", lines)


def refunds(report: Report) -> Section:
    lines = []
    for currency in sorted(set(report.refunds) | set(report.refunds_reversed)):
        if not report.refunds.get(currency) and not report.refunds_reversed.get(currency):
            continue  # exposed at 0, nothing happened
        standing = report.refund_amounts.get(currency, 0.0) - report.refund_reversed_amounts.get(currency, 0.0)
        created = count(report.refunds.get(currency, 0.0))
        text = f"{currency.upper()}: {created} refunds, {money(standing, currency)} refunded"
        reversed_ = report.refunds_reversed.get(currency, 0.0)
        if reversed_:
            text += (f" (after {count(reversed_)} failed or canceled, "
                     f"{money(report.refund_reversed_amounts.get(currency, 0.0), currency)})")
        lines.append(Line(text))
    return Section("Refunds", lines or [Line("No refunds.")])


def fraud(report: Report) -> Section:
    disputed = ", ".join(money(a, c) for c, a in sorted(report.dispute_amounts.items()) if a)
    return Section("Disputes and early fraud warnings", [
        Line(f"Disputes: {count(report.disputes)}" + (f" ({disputed})" if disputed else "")),
        Line(f"Early fraud warnings: {count(report.early_fraud_warnings)}"),
    ])


def mrr(report: Report) -> Section:
    lines = []
    for currency in sorted(set(report.mrr) | set(report.mrr_avg7d)):
        now, average = report.mrr.get(currency), report.mrr_avg7d.get(currency)
        text = f"{currency.upper()}: {money(now, currency) if now is not None else 'no figure'}"
        if average is None:
            text += ", no 7-day average yet"
        else:
            text += f", 7-day average {money(average, currency)}"
            if now is not None and average:
                text += f" ({(now - average) / average:+.1%})"
        lines.append(Line(text))
    return Section("MRR at the end of the period, against its 7-day average", lines or [Line("No MRR recorded.")])


def subscriptions(report: Report) -> Section:
    return Section("Subscriptions", [
        Line(f"Started: {count(report.subscriptions_started)}"),
        Line(f"Ended (canceled or expired): {count(report.subscriptions_ended)}"),
    ])


def anomalies(report: Report, link_url: str) -> Section:
    lines = []
    for (detector, priority), found in sorted(report.anomalies.items()):
        if not found:
            continue
        records = report.records.get(detector, [])
        details = [f"{record_line(r)}  {link_url.rstrip('/')}{anomaly_path(r)}" for r in records[:10]]
        if len(records) > 10:
            details.append(f"and {len(records) - 10} more")
        lines.append(Line(f"{detector} ({priority}): {count(found)}",
                          link_url.rstrip("/") + period_path(report, detector), details))
    return Section("Anomalies by detector", lines or [Line("No anomalies.")])


def period_path(report: Report, detector: str) -> str:
    """The /anomalies page of the detector's findings of the digest's period and mode ('to' is exclusive)."""
    window = report.window
    iso = "%Y-%m-%dT%H:%M:%SZ"
    return anomalies_path(detector=detector, livemode=window.livemode,
                          from_=datetime.fromtimestamp(int(window.start), UTC).strftime(iso),
                          to=datetime.fromtimestamp(int(window.end) + 1, UTC).strftime(iso))


def record_line(record: dict[str, Any]) -> str:
    ids = ", ".join(f"{k} {record[k]}" for k in RECORD_IDS if record.get(k))
    return f"{utc(record['event_created'])}: {record.get('summary', '')}" + (f" [{ids}]" if ids else "")


def alerts(report: Report) -> Section:
    lines = []
    for alert in report.alerts:
        labels = alert.labels
        name = " ".join(x for x in (labels.get("alertname"), labels.get("detector")) if x)
        others = " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ALERT_LABELS_SHOWN_APART)
        level = " ".join(x for x in (labels.get("severity", "no severity"), labels.get("priority")) if x)
        text = f"{name} ({level})" + (f" {others}" if others else "")
        since = f"active since {utc(alert.active_since)}, " if alert.active_since else ""
        lines.append(Line(f"{text}: {since}{'still firing' if alert.firing_at_end else 'resolved'}"))
    return Section("Alerts that fired", lines or [Line("No alerts fired.")])


def _template(name: str) -> Template:
    return Template(resources.files("billingwatch.commands").joinpath("digest_templates", name).read_text("utf-8"))


def header(report: Report) -> tuple[str, str]:
    window = report.window
    return (f"BillingWatch digest, {mode(window.livemode)}",
            f"{utc(window.start)} to {utc(window.end)} ({period_name(window.seconds)})")


def text(report: Report, link_url: str, prometheus_url: str) -> str:
    blocks = []
    for section in sections(report, link_url):
        rows = [section.title]
        for line in section.lines:
            rows.append(f"  {line.text}" + (f"  {line.link}" if line.link else ""))
            rows.extend(f"    {d}" for d in line.details)
        rows.extend(f"  Note: {n}" for n in ([] if section.title != "Anomalies by detector" else report.notes))
        blocks.append("\n".join(rows))
    title, period = header(report)
    return _template("digest.txt").substitute(
        title=title, period=period, sections="\n\n".join(blocks), prometheus_url=prometheus_url,
        anomalies_url=f"{link_url.rstrip('/')}/anomalies")


def html_part(report: Report, link_url: str, prometheus_url: str) -> str:
    e = html.escape
    blocks = []
    for section in sections(report, link_url):
        items = []
        for line in section.lines:
            item = e(line.text)
            if line.link:
                item += f' <a href="{e(line.link)}">details</a>'
            if line.details:
                item += "<ul>" + "".join(f"<li>{e(d)}</li>" for d in line.details) + "</ul>"
            items.append(f"<li>{item}</li>")
        if section.title == "Anomalies by detector":
            items.extend(f"<li><em>Note: {e(n)}</em></li>" for n in report.notes)
        blocks.append(f"<h3>{e(section.title)}</h3>\n<ul>\n" + "\n".join(items) + "\n</ul>")
    title, period = header(report)
    anomalies_url = f"{link_url.rstrip('/')}/anomalies"
    return _template("digest.html").substitute(
        title=e(title), period=e(period), sections="\n".join(blocks), prometheus_url=e(prometheus_url),
        anomalies_url=e(anomalies_url))
