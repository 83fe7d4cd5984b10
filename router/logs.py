"""Logging: one JSON object per line (or plain text for a terminal), stdlib only."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

__all__ = ["setup_logging"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _Redact(logging.Filter):
    """Tokens travel in WebSocket URLs (browsers can't set headers there); keep them out of
    logs, uvicorn's "[accepted]" lines included."""

    _TOKEN = re.compile(r"(token=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if "token=" in str(record.msg):
            record.msg = self._TOKEN.sub(r"\1***", str(record.msg))
        return True


def setup_logging(level: str = "info", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        fmt.converter = time.gmtime
        handler.setFormatter(fmt)
    handler.addFilter(_Redact())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # libraries that log every connection or request at INFO (aiosmtpd: each SMTP peer and
    # command; httpx: each outbound request) drown ours; their warnings still show, and
    # everything at level=debug
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in _CHATTY:
        logging.getLogger(name).setLevel(quiet)


_CHATTY = ("mail.log", "httpx", "httpcore")
