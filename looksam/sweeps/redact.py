"""Keep credentials out of logs, tracking stores and error messages.

Sweeps name their Optuna storage and MLflow tracking store by URL, and database URLs carry
credentials (``postgresql://user:secret@host/db``). Anything that records or prints such a URL
passes it through :func:`redact_url` or :func:`redact_text` first.

A URL that carries user information is shown as its scheme, ``***`` and what follows its last
``@`` (``postgresql://***@host:5432/db``); where that is not a clean host, only its scheme
(``postgresql://***``). No part of the user information (name or password) is kept: the password
may itself contain ``@``, ``:`` or ``/`` (SQLAlchemy, which Optuna's storage uses, accepts them),
so no rule can tell where it ends, and the rules hide too much, never too little.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

_SCHEME = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*)://(?P<rest>.*)", re.DOTALL)
# Before the last '@': "user:…" that is not "host:port/…" reads as credentials even when the
# password holds a '/', which ends the authority for RFC 3986 but not for SQLAlchemy.
_USER_THEN_PASSWORD = re.compile(r"[^:/?#@\[\]\s]*:(?!\d{1,5}(?:[/?#]|$))")
# What may follow the last '@': a host name or bracketed address, a port, then path and query.
_CLEAN_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%\-]+)(?::\d{1,5})?(?:[/?#][^\s'\"<>]*)?"
)
# password=..., db_password=..., access_token=..., api_key=... (query strings, libpq DSNs)
_SECRET_PARAM = re.compile(
    r"(?P<key>(?<![\w-])[\w-]*(?:password|passwd|pwd|secret|token|api_?key)=)"
    r"(?P<value>[^&;#\s'\"<>]*)",
    re.IGNORECASE,
)
# a URL inside free text: a scheme, "://", then anything up to whitespace or a quote
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>]*")
# how a user information splits into the pieces a driver's message might quote
_USERINFO_PIECES = re.compile(r"[:@/]")


def _mask_param(match: re.Match[str]) -> str:
    return f"{match['key']}{MASK}" if match["value"] else match[0]


def _userinfo(url: str) -> str | None:
    """The user information of ``url`` (all before its last ``@``), or None if it has none."""
    match = _SCHEME.fullmatch(url)
    if match is None or "@" not in match["rest"]:
        return None
    rest = match["rest"]
    before = rest.rpartition("@")[0]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority or _USER_THEN_PASSWORD.match(before):
        return before
    return None  # an '@' in a path or a query ("repo@v1.0", "?user=me@example.com")


def _mask_credentials(url: str) -> str:
    userinfo = _userinfo(url)
    if userinfo is None:
        return url
    scheme = url.partition("://")[0]
    after = url[len(scheme) + 3 + len(userinfo) + 1 :]
    if not _CLEAN_HOST.fullmatch(after):
        return f"{scheme}://{MASK}"
    return f"{scheme}://{MASK}@{after}"


def redact_url(url: str) -> str:
    """``url`` with its user information replaced by ``***`` and secret-looking query values
    masked (``?password=…``, ``&token=…``). A URL without credentials, a ``sqlite:///`` URL or a
    plain file path comes back unchanged, character for character."""
    return _SECRET_PARAM.sub(_mask_param, _mask_credentials(url))


def redact_text(text: str, *, urls: Iterable[str] = ()) -> str:
    """Redact every URL with credentials inside free text, e.g. an exception message.

    ``key=value`` pairs whose key names a secret (``password=…`` in a libpq connection string)
    are masked too. ``urls``: the URLs the text is about; any piece of their user information
    that the text quotes on its own (a driver that read part of a password as a host name) is
    masked as well.
    """
    text = _URL_IN_TEXT.sub(lambda m: _mask_credentials(m[0]), text)
    for url in urls:
        for piece in {p for p in _USERINFO_PIECES.split(_userinfo(url) or "") if p}:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(piece)}(?![A-Za-z0-9])", MASK, text)
    return _SECRET_PARAM.sub(_mask_param, text)


def redact_error(error: BaseException, *urls: str) -> str:
    """The first line of an error message (its type's name if it has none), credentials masked:
    every URL's, and any piece of ``urls``' user information the message quotes."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return redact_text(first, urls=urls)
