"""BILLINGWATCH_WEB_CONFIG_FILE: the Prometheus exporter-toolkit web configuration file
(basic_auth_users with bcrypt hashes, tls_server_config with cert_file and key_file), so the
file an operator keeps for node_exporter works here too (docs/sign-in.md).

Read once at start-up (exporter-toolkit re-reads it per request; here a change needs a
restart). What the exporter cannot honour is refused at start-up in one line rather than
silently ignored: a setting someone wrote for security (client certificates, TLS versions,
response headers, a rate limit) must not look applied when it is not. The one exception is
`http_server_config.http2`, a transport preference exporter-toolkit itself treats as optional:
uvicorn speaks HTTP/1.1, and a warning says so.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# $2a$, $2b$, $2y$ (htpasswd -B), cost, 22 characters of salt and 31 of hash.
BCRYPT_HASH = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")
TOP_LEVEL = ("tls_server_config", "http_server_config", "basic_auth_users")
TLS_KEYS = ("cert_file", "key_file")
HTTP_KEYS = ("http2",)


class WebConfigError(ValueError):
    """The file cannot be used; the message names the key, never a hash or a password."""


@dataclass(frozen=True)
class WebConfig:
    path: str
    # user name -> bcrypt hash (bytes, as bcrypt.checkpw takes it)
    users: dict[str, bytes] = field(default_factory=dict)
    cert_file: str = ""
    key_file: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        return bool(self.cert_file)

    def __repr__(self) -> str:  # the hashes stay out of logs
        return f"WebConfig(path={self.path!r}, users={sorted(self.users)}, tls={self.tls})"


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise WebConfigError(f"{where} must be a mapping")
    return value


def _refuse_unknown(section: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise WebConfigError(f"{where}{unknown[0]} is not supported by BillingWatch (supported: "
                             f"{', '.join(where + k for k in known)}; docs/sign-in.md)")


def check_user_name(name: str) -> None:
    # A Basic credential is "user:password": a colon in the name could never match.
    if not name or ":" in name or not name.isprintable():
        raise WebConfigError(f"user name {name[:40]!r} must be printable and without ':'")


def _users(section: dict[str, Any]) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for name, hashed in section.items():
        try:
            check_user_name(name)
        except WebConfigError as exc:
            raise WebConfigError(f"basic_auth_users: {exc}") from None
        if not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            raise WebConfigError(f"basic_auth_users: the password of {name[:40]!r} is not a bcrypt hash "
                                 "(make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)")
        users[name] = hashed.encode()
    return users


def _tls(section: dict[str, Any], base: Path) -> tuple[str, str]:
    _refuse_unknown(section, TLS_KEYS, "tls_server_config.")
    if not section:
        return "", ""
    paths = []
    for key in TLS_KEYS:
        value = section.get(key)
        if not isinstance(value, str) or not value:
            raise WebConfigError(f"tls_server_config.{key} is required with tls_server_config")
        path = base / value  # relative to the file, as exporter-toolkit resolves them
        if not path.is_file():
            raise WebConfigError(f"tls_server_config.{key}: cannot read {path}")
        paths.append(str(path))
    return paths[0], paths[1]


def load(path: str) -> WebConfig:
    """The checked web configuration; raises WebConfigError with a one-line reason."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise WebConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise WebConfigError(f"{path} is not valid YAML{where}") from None
    top = _mapping(document, "the file")
    _refuse_unknown(top, TOP_LEVEL, "")
    http = _mapping(top.get("http_server_config"), "http_server_config")
    _refuse_unknown(http, HTTP_KEYS, "http_server_config.")
    warnings: tuple[str, ...] = ()
    if "http2" in http:
        if not isinstance(http["http2"], bool):
            raise WebConfigError("http_server_config.http2 must be true or false")
        warnings = ("http_server_config.http2 is ignored: the exporter speaks HTTP/1.1",)
    cert_file, key_file = _tls(_mapping(top.get("tls_server_config"), "tls_server_config"), Path(path).parent)
    return WebConfig(path, _users(_mapping(top.get("basic_auth_users"), "basic_auth_users")),
                     cert_file, key_file, warnings)
