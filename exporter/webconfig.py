"""--web.config.file: the Prometheus exporter-toolkit's web configuration, as exporters use it.

    tls_server_config:
      cert_file: /etc/lookout/tls.crt
      key_file: /etc/lookout/tls.key
      client_auth_type: RequireAndVerifyClientCert   # NoClientCert (default) ... see CLIENT_AUTH
      client_ca_file: /etc/lookout/ca.crt
      min_version: TLS12                              # TLS10 .. TLS13
    http_server_config:
      headers: { Strict-Transport-Security: max-age=31536000 }
    basic_auth_users:
      prometheus: $2y$10$...                          # bcrypt (htpasswd -nBC 10 "" | tr -d ':')

The older lookout.toml keys (exporter.tls_cert, tls_key, basic_auth_user,
basic_auth_password_sha256) keep working; they cannot be combined with a web config file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, ExporterSettings

CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# The headers exporter-toolkit lets a web config set; the rest are the exporter's own.
ALLOWED_HEADERS = ("Strict-Transport-Security", "X-Frame-Options", "X-Content-Type-Options", "X-XSS-Protection",
                   "Content-Security-Policy")
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version",
             "prefer_server_cipher_suites", "cipher_suites", "curve_preferences", "client_allowed_sans"}
MAX_BCRYPT_COST = 14  # each step doubles the time of a check; 14 is ~1 s
_DUMMY_HASH = b"$2b$10$u16mP/kdfLVb4u86v5XH/ekI281v5QYzOByynulowZB09vkdHAcYe"  # for equal timing on unknown users


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, str] = field(default_factory=dict)  # user -> bcrypt hash, or "sha256:<hex>"
    headers: dict[str, str] = field(default_factory=dict)
    source: str = ""
    _ok: set[bytes] = field(default_factory=set)  # digests of credentials that passed: bcrypt is slow
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    def authorized(self, header: str | None) -> bool:
        """Basic auth: credentials compared as bytes (a non-ASCII user name is just wrong, not an error)."""
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            raw = base64.b64decode(header[6:].strip(), validate=True)
        except ValueError:
            return False
        user, sep, password = raw.partition(b":")
        if not sep:
            return False
        digest = hashlib.sha256(raw).digest()
        with self._lock:
            if digest in self._ok:
                return True
        stored = next((h for u, h in self.users.items() if hmac.compare_digest(u.encode(), user)), None)
        if stored is None:
            _bcrypt_check(password, _DUMMY_HASH)  # the same cost whether or not the user exists
            return False
        if stored.startswith("sha256:"):
            ok = hmac.compare_digest(hashlib.sha256(password).hexdigest().encode(), stored[7:].lower().encode())
        else:
            ok = _bcrypt_check(password, stored.encode())
        if ok:
            with self._lock:
                if len(self._ok) > 1000:
                    self._ok.clear()
                self._ok.add(digest)
        return ok


def _bcrypt_check(password: bytes, hashed: bytes) -> bool:
    import bcrypt

    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        return False


def _file(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "expected a file path")
    try:
        is_file = os.path.isfile(value) or not os.stat(value)
    except PermissionError:
        raise ConfigError(key, f"{value}: not readable by this user (a directory above it is private)") from None
    except OSError:
        is_file = False
    if not is_file:
        raise ConfigError(key, f"{value}: no such file")
    try:
        with open(value, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(key, f"{value}: not readable by this user ({exc.strerror})") from None
    return value


_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


def _bcrypt_hash(user: Any, hashed: Any, key: str) -> str:
    """A hash bcrypt can check, or a ConfigError naming the user: a malformed one would refuse every
    login later, with nothing in the log."""
    if not isinstance(user, str) or not user:
        raise ConfigError(key, "user names must be strings")
    if ":" in user or any(ord(c) < 32 for c in user):
        raise ConfigError(f"{key}.{user!r}", "a user name cannot hold ':' or control characters (basic auth "
                                             "could never send it)")
    if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
        raise ConfigError(f"{key}.{user}", "must be a bcrypt hash ($2y$...), not a password")
    malformed = ConfigError(f"{key}.{user}", "not a valid bcrypt hash (malformed or cut short): make one with "
                                             "`htpasswd -nBC 10 \"\" | tr -d ':'`")
    if not _BCRYPT.fullmatch(hashed):
        raise malformed
    cost = int(hashed[4:6])
    if cost > MAX_BCRYPT_COST:  # before any check with it: one check would take that long here too
        raise ConfigError(f"{key}.{user}", f"bcrypt cost {cost} makes every new login take "
                                           f"{2 ** (cost - 10) / 10:.0f}s or more of a worker's time: use 10 to "
                                           f"{MAX_BCRYPT_COST}")
    if _bcrypt_unusable(hashed):
        raise malformed
    return hashed


def _bcrypt_unusable(hashed: str) -> bool:
    import bcrypt

    try:
        bcrypt.checkpw(b"lookout-check", hashed.encode())
    except ValueError:
        return True
    return False


def _ssl_context(tls: Any, where: str) -> ssl.SSLContext:
    if not isinstance(tls, dict):
        raise ConfigError(where, "must be a mapping")
    for key in tls:
        if key not in _TLS_KEYS:
            raise ConfigError(f"{where}.{key}", "unknown key")
    for key in ("client_auth_type", "min_version", "max_version", "client_ca_file"):
        if key in tls and tls[key] is not None and not isinstance(tls[key], str):
            raise ConfigError(f"{where}.{key}", "must be a string")
    if "prefer_server_cipher_suites" in tls and not isinstance(tls["prefer_server_cipher_suites"], bool):
        raise ConfigError(f"{where}.prefer_server_cipher_suites", "must be true or false")
    for key in ("cipher_suites", "curve_preferences", "client_allowed_sans"):
        if tls.get(key):
            raise ConfigError(f"{where}.{key}", "not supported by lookout-exporter (Python's TLS): remove it")
    cert = _file(tls.get("cert_file"), f"{where}.cert_file")
    key = _file(tls.get("key_file"), f"{where}.key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{where}.cert_file", f"cannot load the certificate and key: {exc}") from None
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        raise ConfigError(f"{where}.client_auth_type", f"{auth!r} is not one of {', '.join(CLIENT_AUTH)}")
    context.verify_mode = CLIENT_AUTH[auth]
    ca = tls.get("client_ca_file")
    if ca:
        try:
            context.load_verify_locations(_file(ca, f"{where}.client_ca_file"))
        except ssl.SSLError as exc:
            raise ConfigError(f"{where}.client_ca_file", f"cannot load it: {exc}") from None
    elif auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert", "RequireAnyClientCert"):
        why = " (Python's TLS verifies every client certificate it asks for)" if auth == "RequireAnyClientCert" else ""
        raise ConfigError(f"{where}.client_ca_file", f"required with client_auth_type {auth}{why}")
    for bound, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if tls.get(bound):
            if tls[bound] not in TLS_VERSIONS:
                raise ConfigError(f"{where}.{bound}", f"{tls[bound]!r} is not one of {', '.join(TLS_VERSIONS)}")
            setattr(context, attr, TLS_VERSIONS[tls[bound]])
    low, high = tls.get("min_version"), tls.get("max_version")
    if low and high and TLS_VERSIONS[low] > TLS_VERSIONS[high]:
        raise ConfigError(f"{where}.min_version", f"{low} is above max_version {high}: no client could connect")
    if tls.get("prefer_server_cipher_suites", True):
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def _strict_loader() -> type:
    """yaml's SafeLoader, refusing a key given twice (it would silently keep the last one)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def load_web_config(path: str) -> WebConfig:
    import yaml

    _StrictLoader = _strict_loader()  # noqa: N806

    where = "--web.config.file"
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_StrictLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(where, f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(where, f"{path}: not valid YAML{at}: {str(problem)[:120]}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(where, f"{path}: cannot read it ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise ConfigError(where, f"{path}: must be a YAML mapping")
    web = WebConfig(source=path)
    for key, value in data.items():
        if key == "tls_server_config":
            if not value:
                raise ConfigError(key, "is empty: give cert_file and key_file, or remove it to serve plain HTTP")
            web.ssl_context = _ssl_context(value, key)
        elif key == "basic_auth_users":
            if not isinstance(value, dict):
                raise ConfigError(key, "must map user names to bcrypt hashes")
            web.users = {user: _bcrypt_hash(user, hashed, key) for user, hashed in value.items()}
        elif key == "http_server_config":
            web.headers = _headers(value or {})
        else:
            raise ConfigError(str(key), "unknown key")
    return web


def _headers(http: Any) -> dict[str, str]:
    if not isinstance(http, dict):
        raise ConfigError("http_server_config", "must be a mapping")
    headers = {}
    for key, value in http.items():
        if key == "http2":
            if not isinstance(value, bool):
                raise ConfigError("http_server_config.http2", "must be true or false")
            continue  # lookout-exporter serves HTTP/1.x; accepted so shared web configs load
        if key != "headers":
            raise ConfigError(f"http_server_config.{key}", "unknown key")
        if not isinstance(value or {}, dict):
            raise ConfigError("http_server_config.headers", "must be a mapping of header names to values")
        for name, text in (value or {}).items():
            where = f"http_server_config.headers.{name}"
            if name not in ALLOWED_HEADERS:
                raise ConfigError(where, f"cannot be configured (allowed: {', '.join(ALLOWED_HEADERS)})")
            headers[name] = _header_value(text, where)
    return headers


def _header_value(text: Any, where: str) -> str:
    """What HTTP can carry: a string in Latin-1 with no line breaks (a CR or LF would inject headers,
    a curly quote would make every response, /healthz too, fail to send)."""
    if not isinstance(text, (str, int, float)) or isinstance(text, bool):
        raise ConfigError(where, "must be a string")
    value = str(text)
    if any(c in value for c in "\r\n\x00"):
        raise ConfigError(where, "must not contain a line break or NUL (header injection)")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ConfigError(where, f"{value[exc.start]!r} at position {exc.start} cannot be sent in an HTTP header "
                                 "(only Latin-1: use plain quotes)") from None
    return value


def web_config(settings: ExporterSettings, path: str = "") -> WebConfig:
    """The web config file when given, else the older lookout.toml keys."""
    legacy = settings.tls_cert or settings.basic_auth_user
    if (path or settings.web_config) and legacy:
        raise ConfigError("--web.config.file" if path else "exporter.web_config",
                          "cannot be combined with exporter.tls_* / exporter.basic_auth_* in lookout.toml: "
                          "move those into the web config file")
    path = path or settings.web_config
    if path:
        return load_web_config(path)
    web = WebConfig(source="lookout.toml")
    if settings.tls_cert:
        _file(settings.tls_cert, "exporter.tls_cert")
        _file(settings.tls_key, "exporter.tls_key")
        web.ssl_context = _ssl_context({"cert_file": settings.tls_cert, "key_file": settings.tls_key}, "exporter")
    if settings.basic_auth_user:
        if len(settings.basic_auth_password_sha256) != 64:
            raise ConfigError("exporter.basic_auth_password_sha256", "must be the sha256 hex digest of the password")
        web.users = {settings.basic_auth_user: "sha256:" + settings.basic_auth_password_sha256}
    return web
