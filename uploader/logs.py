"""Logging: text or JSON lines, one access line per request, no secrets.

``configure_logging`` installs one stderr handler from the ``logging``
config section (``cli.py`` calls it once the config is loaded).
``log_request`` is the Tornado ``log_function`` app setting: it writes the
access line and feeds the request metrics from the same numbers.

Secrets: access lines are built from chosen fields only (never headers, never
the query string; ``Authorization`` is never read here). Every formatted line
also passes ``redact`` as a safety net for messages written elsewhere (a
library logging a URL with ``?token=``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import LoggingConfig

access_log = logging.getLogger("uploader.access")

# Query parameters and header-style values that carry credentials.
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:token|access_token|auth|key|api_key|apikey|password|secret|signature|sig|"
    r"x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&\s\"']*")
_SECRET_AUTH = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{4,}")
_SECRET_HEADER = re.compile(r"(?i)(['\"]?authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\n,}]+")

# Record attributes every LogRecord has: anything else came in ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact(text: str) -> str:
    text = _SECRET_HEADER.sub(r"\1[redacted]", text)
    text = _SECRET_PARAM.sub(r"\1[redacted]", text)
    return _SECRET_AUTH.sub(r"\1\2[redacted]", text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the record's extra
    fields (an access line's method, route, status, ...), exc on errors."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc)
                          .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            doc["exc"] = redact(record.exc_text)
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure_logging(config: "LoggingConfig") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(config.level.upper())


def log_request(handler: Any, *, aborted: bool = False) -> None:
    """Tornado's ``log_function``: one access line and the request metrics.

    Also called by BaseHandler when the client hung up before any answer
    (``aborted``: Tornado calls log_function only for answered requests);
    that line says 499, nginx's code for "client closed the request".
    """
    request = handler.request
    status = 499 if aborted else handler.get_status()
    seconds = request.request_time()
    fields: dict[str, Any] = {"method": request.method, "route": "", "path": request.path,
                              "status": status, "duration_ms": round(seconds * 1000, 2),
                              "ip": request.remote_ip}
    describe = getattr(handler, "access_fields", None)
    if describe is not None:
        fields.update(describe())
    # From the application: static files are not BaseHandlers but count too.
    metrics = getattr(getattr(handler.application, "runtime", None), "metrics", None)
    if metrics is not None:
        fields["route"] = metrics.route_of(handler)
        metrics.observe_request(fields["route"], request.method, status, seconds,
                                fields.get("error"), fields.get("bytes"),
                                chunk_written=status == 200 and "index" in fields)
    if status >= 500 and status != 503:
        level = logging.ERROR
    elif status >= 400:
        level = logging.WARNING if status in (401, 429) else logging.INFO
    else:
        level = logging.INFO
    if not access_log.isEnabledFor(level):
        return
    text = " ".join(f"{k}={v}" for k, v in fields.items()
                    if k not in ("method", "path", "status", "duration_ms") and v not in (None, ""))
    access_log.log(level, "%s %s %d %.1fms %s", request.method, request.path, status,
                   seconds * 1000, text, extra=fields)
