"""The JSON access log: one line per request with id, model, version, status and latency."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from berth import logs
from berth.registry import Registry
from berth.settings import Settings
from tests.conftest import ClientFactory
from tests.fakes import register_fake

LOGGERS = ("berth", "uvicorn", "uvicorn.error", "uvicorn.access")


def _stop() -> None:
    """Write out the queue and close the handlers (the rotating file among them)."""
    logs.drain()
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            handler.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    _stop()
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
        logger.disabled = False


def _lines(text: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_logging")
def test_access_log_lines(registry: Registry, make_client: ClientFactory, tmp_path: Path) -> None:
    register_fake(registry, "adder")
    stream = io.StringIO()
    log_file = tmp_path / "logs" / "berth.log"
    settings = Settings(registry=registry.root, log_file=log_file, log_file_max_bytes=2048)
    logs.configure_logging(settings, stream)
    with make_client(registry) as client:
        ok = client.post("/predict", json={"features": [1, 2, 3]}, headers={"X-Request-ID": "r-1"})
        bad = client.post("/predict", json={"features": [1]}, headers={"X-Request-ID": "r-2"})
        client.get("/health")
        for i in range(30):
            client.post("/predict", json={"features": [i, 2, 3]})
    assert (ok.status_code, bad.status_code) == (200, 422)
    _stop()
    access = [line for line in _lines(stream.getvalue()) if line["logger"] == "berth.access"]
    by_id = {line["request_id"]: line for line in access}
    first = by_id["r-1"]
    assert first["message"] == "POST /predict 200"
    assert (first["model"], first["version"], first["status"]) == ("adder", 1, 200)
    assert first["endpoint"] == "/predict"
    assert isinstance(first["latency_ms"], float) and first["latency_ms"] > 0
    assert (by_id["r-2"]["status"], by_id["r-2"]["model"]) == (422, "adder")
    assert not any(line["path"] == "/health" for line in access)  # probes are debug-level
    assert len(access) == 32
    # the rotating file got the same lines, split over rotated files of at most 2 KiB
    files = sorted(log_file.parent.glob("berth.log*"))
    assert len(files) > 1
    assert all(f.stat().st_size <= 2048 + 1024 for f in files)
    in_files = [
        line for f in files for line in _lines(f.read_text()) if line["logger"] == "berth.access"
    ]
    assert len(in_files) <= 32 and in_files  # older ones rotated out beyond log_file_backups
    assert {line["request_id"] for line in in_files} <= {line["request_id"] for line in access}


@pytest.mark.usefixtures("restore_logging")
def test_access_log_can_be_switched_off(registry: Registry, make_client: ClientFactory) -> None:
    register_fake(registry, "adder")
    stream = io.StringIO()
    logs.configure_logging(Settings(registry=registry.root), stream)
    with make_client(registry, access_log=False) as client:
        client.post("/predict", json={"features": [1, 2, 3]})
    _stop()
    assert not [line for line in _lines(stream.getvalue()) if line["logger"] == "berth.access"]


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_log_fields_writes_what_a_log_record_would(log_format: str) -> None:
    """The request path's direct records and ordinary LogRecords come out alike."""
    stream = io.StringIO()
    logs.configure_logging(Settings(log_format=log_format), stream)
    logger = logging.getLogger("berth.access")
    fields = {"request_id": "r-9", "status": 200, "model": "m", "variant": None}
    logs.log_fields(logger, logging.INFO, "POST /predict 200", fields)
    logger.info("POST /predict 200", extra=fields)
    logs.log_fields(logger, logging.DEBUG, "not shown at info", fields)
    _stop()
    direct, classic = stream.getvalue().splitlines()
    if log_format == "json":
        first, second = orjson.loads(direct), orjson.loads(classic)
        assert first.pop("ts")[:16] == second.pop("ts")[:16]
        assert (
            first
            == second
            == {
                "level": "info",
                "logger": "berth.access",
                "message": "POST /predict 200",
                **fields,
            }
        )
    else:
        assert direct.split(" ", 2)[2] == classic.split(" ", 2)[2]
        assert direct.endswith(
            "INFO    berth.access: POST /predict 200 request_id=r-9 status=200 model=m variant=None"
        )


def test_log_fields_without_configured_logging_goes_through_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="berth.access"):
        logs.log_fields(logging.getLogger("berth.access"), logging.INFO, "hello", {"rows": 3})
    [record] = caplog.records
    assert (record.getMessage(), record.rows) == ("hello", 3)  # type: ignore[attr-defined]
