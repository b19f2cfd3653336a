"""Rendering the people's pages (/, /anomalies): Jinja2 templates from package data, autoescaped,
under a strict Content-Security-Policy: one stylesheet from this origin, forms to this origin,
no script, image, font or frame from anywhere.
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from billingwatch.money import amount_text

STYLESHEET = "/static/pages.css"
CSP = ("default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# The pages name customers: no copy in a shared cache, no URL (with its filters) sent on as a referrer.
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
           "X-Content-Type-Options": "nosniff"}
_CSS = resources.files("billingwatch.http").joinpath("pages_static/pages.css").read_bytes()


def utc(seconds: Any) -> str:
    """Unix seconds as 'YYYY-MM-DD HH:MM:SS UTC'; '' for what is not a time."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return ""
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def age(seconds: float) -> str:
    """A duration as a person says it: '42 s', '5 min', '3 h', '2 d'."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def money(amount: Any, currency: Any) -> str:
    if not isinstance(amount, int) or isinstance(amount, bool):
        return ""
    return amount_text(amount, currency if isinstance(currency, str) else None)


_ENV = Environment(
    loader=PackageLoader("billingwatch.http", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,  # a misspelt name in a template fails the tests, not silently renders ''
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(utc=utc, age=age)
_ENV.globals.update(money=money, stylesheet=STYLESHEET)


def render(template: str, context: Mapping[str, Any], status: int = 200,
           headers: Mapping[str, str] | None = None) -> HTMLResponse:
    body = _ENV.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status, headers={**HEADERS, **(headers or {})})


def problem(title: str, reason: str, status: int, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """A page saying in one line what went wrong."""
    return render("problem.html", {"title": title, "reason": reason}, status, headers)


async def stylesheet(request: Request) -> Response:
    # Public and the same for everyone: a browser may keep it for an hour.
    return Response(_CSS, media_type="text/css", headers={"Cache-Control": "public, max-age=3600",
                                                          "X-Content-Type-Options": "nosniff"})
