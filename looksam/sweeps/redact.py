"""Keep passwords out of logs, tracking stores and error messages.

Sweeps name their Optuna storage and MLflow tracking store by URL, and database URLs carry
passwords (``postgresql://user:secret@host/db``). Anything that records or prints such a URL
passes it through :func:`redact_url` or :func:`redact_text` first.

The password of a URL's userinfo may itself contain ``@`` or ``/`` (SQLAlchemy, which Optuna's
storage uses, accepts both); where a URL is ambiguous the rules hide too much, never too little.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@host. The user part cannot contain ':', '/', '@' or '[', so
# "http://[::1]:5000" is never read as credentials. The password is first read as RFC 3986 does
# (no '/', up to the authority's last '@'); failing that, as SQLAlchemy does (a '/' allowed).
_USERINFO = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\[\s'\"<>]*:)"
    r"(?P<password>[^\s'\"<>/?#]*|[^\s'\"<>/?#@]*/[^\s'\"<>?#]*)"
    r"(?P<tail>@[^\s'\"<>/?#@]*)"
)
# "host:8080/path@x": what looks like a password is a port followed by a path
_PORT_THEN_PATH = re.compile(r"\d{1,5}/.*")
# password=..., db_password=..., access_token=..., api_key=... (query strings, libpq DSNs)
_SECRET_PARAM = re.compile(
    r"(?P<key>(?<![\w-])[\w-]*(?:password|passwd|pwd|secret|token|api_?key)=)"
    r"(?P<value>[^&;#\s'\"<>]*)",
    re.IGNORECASE,
)
# a URL inside free text: a scheme, "://", then anything up to whitespace or a quote
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>]*")


def _mask_userinfo(match: re.Match[str]) -> str:
    password = match["password"]
    if not password or _PORT_THEN_PATH.fullmatch(password):
        return match[0]
    return f"{match['head']}{MASK}{match['tail']}"


def _mask_param(match: re.Match[str]) -> str:
    return f"{match['key']}{MASK}" if match["value"] else match[0]


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``.

    Covers the userinfo password (``scheme://user:secret@host``) and secret-looking query
    parameters (``?password=…``, ``&token=…``). A URL without credentials, a ``sqlite:///`` URL
    or a plain file path comes back unchanged, character for character.
    """
    return _SECRET_PARAM.sub(_mask_param, _USERINFO.sub(_mask_userinfo, url))


def redact_text(text: str) -> str:
    """Redact every URL with credentials inside free text, e.g. an exception message.

    ``key=value`` pairs whose key names a secret (``password=…`` in a libpq connection string)
    are masked too.
    """
    text = _URL_IN_TEXT.sub(lambda m: _USERINFO.sub(_mask_userinfo, m[0]), text)
    return _SECRET_PARAM.sub(_mask_param, text)
