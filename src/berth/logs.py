"""Logging set-up: one JSON object per line (or plain text), written by a background thread.

Records go through a queue so that a slow terminal or pipe never blocks a request.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from berth.settings import Settings

__all__ = ["JsonFormatter", "configure_logging", "drain", "log_fields"]

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_listener: logging.handlers.QueueListener | None = None
_queue: queue.SimpleQueue[Any] | None = None
"""The listener's queue while it runs: `log_fields` puts its records straight in."""
_LOGGERS = ("berth", "uvicorn", "uvicorn.error")


class FieldsRecord:
    """What `log_fields` queues instead of a `logging.LogRecord`: only what the formatters and
    handlers read. Building a LogRecord (caller lookup, thread and process names, the handler
    chain) cost more than the rest of a small prediction request's log line."""

    __slots__ = ("created", "fields", "levelname", "levelno", "msg", "name")
    exc_info = None
    exc_text = None
    stack_info = None
    args = None

    def __init__(self, name: str, level: int, message: str, fields: dict[str, Any]) -> None:
        self.name = name
        self.levelno = level
        self.levelname = logging.getLevelName(level)
        self.created = time.time()
        self.msg = message
        self.fields = fields

    def getMessage(self) -> str:
        return self.msg

    @property
    def msecs(self) -> float:  # as LogRecord computes it, for Formatter.formatTime
        return int((self.created - int(self.created)) * 1000) + 0.0


def log_fields(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    """`logger.log(level, message, extra=fields)`, queued directly to the log writer thread when
    `configure_logging` set `logger` up (the request path's access lines); otherwise through
    the logging machinery as usual (tests capturing records, after `drain`)."""
    if not logger.isEnabledFor(level):
        return
    target = _queue
    if target is None or logger.disabled or not logger.name.startswith(_LOGGERS[0] + "."):
        logger.log(level, "%s", message, extra=fields)
        return
    target.put(FieldsRecord(logger.name, level, message, fields))


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", ...extra fields, "exc_info"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(_fields(record))
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def _fields(record: logging.LogRecord | FieldsRecord) -> dict[str, Any]:
    """A record's own fields: `extra=` of a LogRecord, or a FieldsRecord's."""
    if isinstance(record, FieldsRecord):
        return record.fields
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
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
    global _listener, _queue
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
    _queue = records
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
    global _listener, _queue
    if _listener is None:
        return
    listener, _listener, _queue = _listener, None, None
    listener.stop()
    for name in _LOGGERS:
        logging.getLogger(name).handlers = list(listener.handlers)
