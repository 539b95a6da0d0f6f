"""Logging set-up: one JSON object per line (or plain text), written by a background thread.

Records go through a queue so that a slow terminal or pipe never blocks a request.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from berth.settings import Settings

__all__ = ["JsonFormatter", "configure_logging", "drain"]

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_listener: logging.handlers.QueueListener | None = None
_LOGGERS = ("berth", "uvicorn", "uvicorn.error")


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", ...extra fields, "exc_info"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        )
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        line = f"{line} {extra}" if extra else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _Enqueue(logging.handlers.QueueHandler):
    """Queue the record itself: the JSON formatter needs its extra fields and exc_info intact."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg, record.args = record.getMessage(), None
        return record


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """Route every `berth.*` and `uvicorn.*` record through one queue to `stream` (stderr) and,
    when `log_file` is set, to a size-rotated file."""
    global _listener
    drain()
    formatter = JsonFormatter() if settings.log_format == "json" else TextFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if settings.log_file is not None:
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                settings.log_file,
                maxBytes=settings.log_file_max_bytes,
                backupCount=settings.log_file_backups,
                encoding="utf-8",
            )
        )
    for handler in handlers:
        handler.setFormatter(formatter)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=False)
    _listener.start()
    atexit.unregister(drain)
    atexit.register(drain)
    level = settings.log_level.upper()
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [_Enqueue(records)]
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True


def drain() -> None:
    """Write out every queued record and log synchronously from now on (called at shutdown).

    uvicorn re-raises SIGTERM after a graceful shutdown, so atexit handlers never run.
    """
    global _listener
    if _listener is None:
        return
    listener, _listener = _listener, None
    listener.stop()
    for name in _LOGGERS:
        logging.getLogger(name).handlers = list(listener.handlers)
