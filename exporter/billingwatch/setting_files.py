"""Settings read from files (Docker/Kubernetes secrets, BILLINGWATCH_ACCOUNTS_FILE's secret files)."""

from pathlib import Path


def read_setting_file(path: str, what: str, error: type[Exception]) -> str:
    """The file's text, stripped ("" for an empty or blank file: the caller says what that means).
    A file that cannot be read, or is not UTF-8, raises `error` naming `what` and the path."""
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise error(f"{what}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise error(f"{what}: {path} is not UTF-8 text") from None
