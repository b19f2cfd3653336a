"""Cross-site request forgery, without JavaScript or tokens: a state-changing form POST is taken
only when the browser says it comes from a page of this same site.

Browsers send Sec-Fetch-Site on every request (a page cannot forge it): it must be
"same-origin". An older browser without it sends Origin on a POST: its host and port must be the
request's Host (or BILLINGWATCH_EXTERNAL_URL's, behind a proxy that rewrites Host). A request
with neither is refused: safe by default; a script sets Origin itself.
"""

from urllib.parse import urlsplit

from starlette.requests import Request


def _netloc(url: str) -> str:
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return ""


def same_origin(request: Request, external_url: str = "") -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return False
    allowed = {request.headers.get("host", "").lower()} | ({_netloc(external_url)} if external_url else set())
    return _netloc(origin) in allowed - {""}
