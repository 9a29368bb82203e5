"""Secrets never reach the logs, whoever passed them.

Two nets, both cheap:
- by field name: a structlog field called `password`, `auth_token`, `api_key`... is masked;
- by shape, in every string value (messages, errors, URLs, rendered tracebacks): the
  password of a URL (`scheme://user:PASSWORD@host`), secret query parameters
  (`?api_key=...&token=...`) and `Bearer`/`Basic` credentials are masked.

The same scrubbing is attached, as a `logging.Filter`, to the standard library loggers of
the libraries we use (aiohttp's access log would otherwise write `/ws?token=...`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"
SECRET_KEYS = ("token", "password", "passwd", "auth_token", "secret", "api_key", "apikey", "authorization",
               "encryption_key", "credential")
SAFE_KEYS = frozenset({"token_hash", "token_sha256", "tokens"})

_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@?#'\"]*:)(?P<secret>[^\s@/'\"]+)@")
_QUERY = re.compile(
    r"(?P<pre>[?&;](?:api_key|apikey|token|access_token|auth_token|password|passwd|secret|key|signature|sig)=)"
    r"(?P<secret>[^&\s#'\"]+)",
    re.IGNORECASE,
)
_AUTH = re.compile(r"(?P<pre>\b(?:Bearer|Basic)\s+)(?P<secret>[A-Za-z0-9._~+/=\-]{4,})")

# stdlib loggers that may print request lines, URLs or connection strings
STDLIB_LOGGERS = ("aiohttp.access", "aiohttp.server", "aiohttp.web", "aiohttp.client", "aiohttp.websocket",
                  "websockets", "websockets.client", "websockets.server", "asyncio", "sqlalchemy.engine",
                  "sqlalchemy.pool", "alembic", "asyncpg", "redis", "pyVoIP")


def scrub(text: str) -> str:
    """The text with URL passwords, secret query parameters and auth headers masked."""
    if not text or (not any(c in text for c in ":=" ) and "Bearer" not in text and "Basic" not in text):
        return text
    text = _URL_PASSWORD.sub(lambda m: m.group("pre") + MASK + "@", text)
    text = _QUERY.sub(lambda m: m.group("pre") + MASK, text)
    return _AUTH.sub(lambda m: m.group("pre") + MASK, text)


def _secret_key(key: str) -> bool:
    k = key.lower()
    return k not in SAFE_KEYS and any(s in k for s in SECRET_KEYS)


def scrub_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if depth > 4:
        return value
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and _secret_key(k) and v else scrub_value(v, depth + 1))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub_value(v, depth + 1) for v in value)
    return value


def redact_event(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: put it after `format_exc_info` so tracebacks are scrubbed too."""
    for k in list(event):
        v = event[k]
        if k != "event" and _secret_key(k) and v:
            event[k] = MASK
        elif isinstance(v, (str, dict, list, tuple)):
            event[k] = scrub_value(v)
    return event


class SecretFilter(logging.Filter):
    """Scrubs a stdlib record's message (and rendered traceback) before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string is the library's problem, not ours
            return True
        clean = scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        for attr in ("first_request_line", "request_line", "url"):
            v = getattr(record, attr, None)
            if isinstance(v, str):
                setattr(record, attr, scrub(v))
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


def protect_stdlib_loggers(names: tuple[str, ...] = STDLIB_LOGGERS) -> None:
    """Attach the filter once to each library logger (idempotent)."""
    for name in names:
        lg = logging.getLogger(name)
        if not any(isinstance(f, SecretFilter) for f in lg.filters):
            lg.addFilter(SecretFilter())
