"""Event data in log lines: escaped, so a customer id with a newline cannot forge a log line."""

MAX_LOGGED = 300


def safe(value: object) -> str:
    """str(value) with control and other non-printable characters (\\n, \\r, \\x1b, U+2028...) escaped, capped."""
    text = str(value)
    if len(text) > MAX_LOGGED:
        text = text[:MAX_LOGGED] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
