"""Who may use the dashboard, and which requests may change anything.

- Authentication: a bearer token (``Authorization: Bearer``, or the session
  cookie the login form sets) and/or HTTP basic auth; none on a loopback address.
- Every state change is a POST carrying a CSRF token (a form field or the
  ``X-CSRF-Token`` header) from a page of the same origin; read-only mode
  refuses them all.
- Every response carries a Content-Security-Policy that allows scripts and
  styles from the dashboard itself only, never inline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .._exceptions import ConfigError

__all__ = [
    "CSP",
    "SESSION_COOKIE",
    "Auth",
    "is_loopback",
    "safe_next",
]

SESSION_COOKIE = "rivertrio_ui_session"
MIN_TOKEN_LENGTH = 16
MIN_PASSWORD_LENGTH = 8

#: Nothing inline, nothing from elsewhere: a string from the database that
#: escaped its escaping still could not run.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or ``localhost``): reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def safe_next(target: str | None, default: str) -> str:
    """`target` if it is a path on this site, else `default` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


@dataclass(frozen=True)
class Auth:
    """The configured credentials; with none, every request is the anonymous operator.

    Raises:
        ConfigError: A token or password too short to be a secret, or a bad user name.
    """

    token: str | None = None
    basic: tuple[str, str] | None = None
    allowed_origins: Sequence[str] = ()
    _csrf_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def __post_init__(self) -> None:
        if self.token is not None and (
            not isinstance(self.token, str) or len(self.token) < MIN_TOKEN_LENGTH
        ):
            raise ConfigError(
                f"auth_token must be a string of at least {MIN_TOKEN_LENGTH} characters "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
        if self.basic is not None:
            try:
                user, password = self.basic
            except (TypeError, ValueError):
                raise ConfigError("basic_auth must be a (user, password) pair") from None
            if not isinstance(user, str) or not user or ":" in user:
                raise ConfigError("basic_auth: the user name must be non-empty, without ':'")
            if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
                raise ConfigError(
                    f"basic_auth: the password must be at least {MIN_PASSWORD_LENGTH} characters"
                )
        origins = []
        for origin in self.allowed_origins:
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path not in ("", "/")
            ):
                raise ConfigError(
                    f"allowed origin {origin!r} must be a scheme and host, "
                    "like https://ops.example.com"
                )
            origins.append(parts.netloc.lower())
        object.__setattr__(self, "allowed_origins", tuple(origins))

    @property
    def configured(self) -> bool:
        """Whether any credential is required."""
        return self.token is not None or self.basic is not None

    def session_value(self) -> str:
        """The session cookie's value: derived from the token, so a new token ends old sessions."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"rivertrio-ui-session", hashlib.sha256).hexdigest()

    def check_token(self, candidate: str) -> bool:
        """Whether `candidate` is the token (in constant time)."""
        return self.token is not None and hmac.compare_digest(
            candidate.encode(), self.token.encode()
        )

    def identify(self, authorization: str | None, cookie: str | None) -> str | None:
        """Who the request is from (``"token"``, ``"basic:<user>"``, ``"anonymous"``), or None."""
        if not self.configured:
            return "anonymous"
        scheme, _, value = (authorization or "").partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and self.check_token(value):
            return "token"
        if scheme == "basic" and self.basic is not None:
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, sep, password = decoded.partition(":")
            want_user, want_password = self.basic
            # Both compared, always, so the time taken tells nothing.
            user_ok = hmac.compare_digest(user.encode(), want_user.encode())
            password_ok = hmac.compare_digest(password.encode(), want_password.encode())
            if sep and user_ok and password_ok:
                return f"basic:{user}"
        if (
            self.token is not None
            and cookie is not None
            and hmac.compare_digest(cookie.encode(), self.session_value().encode())
        ):
            return "token"
        return None

    def csrf_token(self, identity: str) -> str:
        """The CSRF token of an identity's pages (valid until the dashboard restarts)."""
        return hmac.new(self._csrf_key, identity.encode(), hashlib.sha256).hexdigest()[:40]

    def check_csrf(self, identity: str, candidate: str | None) -> bool:
        """Whether `candidate` is `identity`'s CSRF token."""
        return candidate is not None and hmac.compare_digest(
            candidate.encode(), self.csrf_token(identity).encode()
        )

    def same_origin(
        self,
        host: str | None,
        origin: str | None,
        fetch_site: str | None,
        referer: str | None,
    ) -> bool:
        """Whether a state-changing request comes from one of the dashboard's own pages.

        Browsers send ``Origin`` with every POST (and ``Sec-Fetch-Site``); the
        origin's host must be the request's ``Host`` or an allowed origin. A
        request with none of these headers is not from a browser (a script),
        and still needs its CSRF token.
        """
        own = {(host or "").lower(), *self.allowed_origins}
        if origin is not None:
            if origin == "null":
                return False
            return urlsplit(origin).netloc.lower() in own
        if fetch_site is not None:
            return fetch_site in ("same-origin", "none")
        if referer is not None:
            return urlsplit(referer).netloc.lower() in own
        return True
