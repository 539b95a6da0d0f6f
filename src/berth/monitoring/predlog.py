"""The durable prediction log: a bounded buffer, a background writer, a spill file and its replay.

The request path only appends a record to a bounded buffer (and, when the buffer is full, to this
process's spill file); it never wakes the writer for one record. The writer thread wakes when a
batch is full or `flush_s` has passed and sends what it has in batches; while the database
is unreachable it spills them to `spill-<pid>.jsonl` and replays every spill file once writes
succeed again (records carry their own id, so a replay interrupted halfway never duplicates).
`close()` drains the buffer: to the database, or to the spill file when it is down.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from berth.ids import new_id
from berth.monitoring.metrics import Metrics
from berth.monitoring.records import LAZY_STORES, json_dumps, require_driver, store_url
from berth.runtimes.base import Batch
from berth.settings import Settings
from berth.types import Outputs

if TYPE_CHECKING:  # SQLAlchemy loads in the writer thread, off the way to readiness
    from sqlalchemy import Engine

__all__ = ["PendingRecord", "PredictionLog", "outputs_json"]

log = logging.getLogger("berth.predictionlog")

_WAKE_RECORDS = 64


def outputs_json(outputs: Outputs) -> dict[str, Any]:
    """`{"predictions": [...], "probabilities": [[...]]?}` for a batch's outputs (arrays stay
    arrays: `records.json_dumps` writes them without a detour through Python lists)."""
    if outputs.values is not None:
        return {"predictions": outputs.values}
    data: dict[str, Any] = {"predictions": list(outputs.labels or [])}
    if outputs.probabilities is not None:
        data["probabilities"] = outputs.probabilities
    return data


@dataclass(slots=True)
class PendingRecord:
    """One prediction request, still holding the batch and outputs (converted by the writer)."""

    request_id: str
    model: str
    version: int
    variant: str | None
    outcome: str
    rows: int
    latency_ms: float
    batch: Batch | None
    outputs: Outputs | None
    ts: datetime
    id: str

    def row(self, fields: frozenset[str]) -> dict[str, Any]:
        inputs = None
        if "inputs" in fields and self.batch is not None:
            inputs = self.batch
        outputs = None
        if "outputs" in fields and self.outputs is not None:
            outputs = outputs_json(self.outputs)
        return {
            "id": self.id,
            "request_id": self.request_id,
            "ts": self.ts,
            "model": self.model,
            "version": self.version,
            "variant": self.variant,
            "outcome": self.outcome,
            "rows": self.rows,
            "latency_ms": self.latency_ms,
            "inputs": inputs,
            "outputs": outputs,
        }


@dataclass(slots=True)
class FeedbackRecord:
    """Ground truth for an earlier request, stored in `berth_feedback`."""

    request_id: str
    truth: Any
    ts: datetime

    def row(self, fields: frozenset[str]) -> dict[str, Any]:
        return {
            "_table": "feedback",
            "request_id": self.request_id,
            "ts": self.ts,
            "truth": self.truth,
        }


Record = PendingRecord | FeedbackRecord


def _insert(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Rows of both tables (feedback rows carry `"_table": "feedback"`), in one transaction."""
    from berth.monitoring import store

    predictions = [row for row in rows if "_table" not in row]
    truths = [{k: v for k, v in row.items() if k != "_table"} for row in rows if "_table" in row]
    store.insert_rows(engine, predictions, truths)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PredictionLog:
    """Records predictions off the request path; see the module docstring for the guarantees."""

    def __init__(self, settings: Settings, state_dir: Path, metrics: Metrics) -> None:
        self.url = store_url(settings.prediction_store, state_dir)
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        require_driver(self.url)  # a store that cannot work fails the start, as before
        if not self.url.startswith(LAZY_STORES):
            self.engine  # noqa: B018 (other stores: SQLAlchemy checks the URL and driver now)
        self.fields = frozenset(settings.prediction_log_fields)
        self.sample_rate = settings.prediction_log_sample_rate
        self.batch_size = settings.prediction_log_batch
        self.flush_s = settings.prediction_log_flush_s
        self.retry_s = settings.prediction_log_retry_s
        self.spill_max_bytes = settings.prediction_log_spill_max_bytes
        self.spill_dir = state_dir / "spill"
        self.spill_path = self.spill_dir / f"spill-{os.getpid()}.jsonl"
        self.metrics = metrics
        self._counter = metrics.prediction_log_records
        self._buffered = metrics.prediction_log_buffered
        self.buffer_max = settings.prediction_log_buffer
        # Wake the writer well before a full batch: records hold their request's arrays, and
        # a deep buffer of 100-row requests costs tens of MB per worker.
        self._wake_at = min(self.batch_size, _WAKE_RECORDS)
        self._buffer: deque[Record] = deque()  # appends and pops are atomic: no lock needed
        self._wake = threading.Event()
        self._stopping = False
        self._spill_lock = threading.Lock()
        self._down_until = 0.0
        self._next_orphan_scan = 0.0
        self._migrated = False
        self._thread: threading.Thread | None = None
        self.counts = {"written": 0, "spilled": 0, "replayed": 0, "dropped": 0}

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The store's engine, made on first use (that is when SQLAlchemy is imported)."""
        with self._engine_lock:
            if self._engine is None:
                from berth.monitoring import store

                self._engine = store.create_store_engine(self.url)
            return self._engine

    def import_store(self) -> None:
        """Import the store's code (SQLAlchemy) now, as the writer thread would at its start:
        before forking workers, so that they share those modules' memory instead of each
        importing them (~18 MiB a worker)."""
        from berth.monitoring import store  # noqa: F401

    def start(self) -> None:
        """Start the writer thread, which creates or migrates the schema first (once the
        database answers) while records already buffer."""
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="berth-predlog", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Flush every buffered record (to the database, else to the spill file), then stop."""
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout)
            self._thread = None
        leftover = self._take(limit=None)
        if leftover:
            self._spill([r.row(self.fields) for r in leftover])
        if self._engine is not None:
            self._engine.dispose()

    # -- request path -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None

    def sampled(self) -> bool:
        return self.sample_rate >= 1.0 or random.random() < self.sample_rate

    def submit(
        self,
        *,
        request_id: str,
        model: str,
        version: int,
        outcome: str,
        latency_ms: float,
        batch: Batch | None,
        outputs: Outputs | None,
        variant: str | None = None,
    ) -> None:
        """Queue one record; never blocks (a full buffer spills it to the local file instead)."""
        record = PendingRecord(
            request_id,
            model,
            version,
            variant,
            outcome,
            len(outputs) if outputs is not None else 0,
            latency_ms,
            batch,
            outputs,
            datetime.now(UTC),
            new_id(),
        )
        self._put(record)

    def submit_feedback(self, request_id: str, truth: Any) -> None:
        """Queue the ground truth of an earlier request (never sampled out)."""
        self._put(FeedbackRecord(request_id, truth, datetime.now(UTC)))

    def _put(self, record: Record) -> None:
        buffer = self._buffer
        if len(buffer) >= self.buffer_max:
            self._spill([record.row(self.fields)])
            return
        buffer.append(record)
        if len(buffer) >= self._wake_at and not self._wake.is_set():
            self._wake.set()

    # -- writer thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        if self._ensure_schema() and self._spilled_any(orphans=True):
            self._replay_all()
        while not self._stopping:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self._write_buffered()
            if self._spilled_any() and self._ensure_schema():
                self._replay_all()
        self._write_buffered()
        if self._spilled_any(orphans=True) and self._ensure_schema():
            self._replay_all()

    def _write_buffered(self) -> None:
        """Write everything buffered now, a batch at a time."""
        while records := self._take(limit=self.batch_size):
            self._write(records)

    def _take(self, limit: int | None) -> list[Record]:
        """Up to `limit` buffered records, oldest first."""
        buffer = self._buffer
        records: list[Record] = []
        while buffer and (limit is None or len(records) < limit):
            try:
                records.append(buffer.popleft())
            except IndexError:  # close() after a join timeout races the writer for the rest
                break
        self._buffered.set(len(buffer))
        return records

    def _ensure_schema(self) -> bool:
        """True when the database answers and has the current schema."""
        if not self._database_usable():
            return False
        if not self._migrated:
            from sqlalchemy.exc import SQLAlchemyError

            from berth.monitoring import store

            try:
                store.migrate(self.engine)
            except SQLAlchemyError as exc:
                self._mark_down(exc)
                return False
            self._migrated = True
        return True

    def _write(self, records: list[Record]) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        rows = [r.row(self.fields) for r in records]
        if self._ensure_schema():
            try:
                written = self._insert_or_drop(rows)
            except SQLAlchemyError as exc:
                self._mark_down(exc)
            else:
                self._count("written", written)
                return
        self._spill(rows)

    def _insert_or_drop(self, rows: list[dict[str, Any]]) -> int:
        """Insert rows; when the database refuses their content (not its connection), insert
        them one by one and drop, count and log those it refuses: one bad record must not hold
        every later one in the spill file. Returns how many were stored."""
        from sqlalchemy.exc import DataError, IntegrityError

        refused = (DataError, IntegrityError)  # the record's content; others: the database is down
        try:
            _insert(self.engine, rows)
            return len(rows)
        except refused:
            pass
        stored = 0
        for row in rows:
            try:
                _insert(self.engine, [row])
                stored += 1
            except refused as exc:
                log.error(
                    "the prediction store refused a record; dropped",
                    extra={"request_id": row.get("request_id"), "error": str(exc).splitlines()[0]},
                )
                self._count("dropped", 1)
        return stored

    def _database_usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _mark_down(self, exc: Exception) -> None:
        if self._database_usable():
            log.warning(
                "prediction store unreachable; spilling records to %s until it returns",
                self.spill_path,
                extra={"error": str(exc).splitlines()[0][:300]},
            )
        self._down_until = time.monotonic() + self.retry_s

    def _count(self, outcome: str, n: int) -> None:
        self.counts[outcome] += n
        self._counter.labels(outcome).inc(n)

    # -- spill and replay -------------------------------------------------------------------

    def _spill(self, rows: list[dict[str, Any]]) -> None:
        data = b"".join(json_dumps(row) + b"\n" for row in rows)
        with self._spill_lock:
            try:
                size = self.spill_path.stat().st_size if self.spill_path.exists() else 0
                if size + len(data) > self.spill_max_bytes:
                    raise OSError(f"spill file would exceed {self.spill_max_bytes} bytes")
                with self.spill_path.open("ab") as handle:
                    handle.write(data)
            except OSError as exc:
                log.error(
                    "prediction records dropped", extra={"records": len(rows), "error": str(exc)}
                )
                self._count("dropped", len(rows))
                return
        self._count("spilled", len(rows))

    def _spilled_any(self, orphans: bool = False) -> bool:
        """Whether this process spilled records, or (checked every `retry_s`, or when `orphans`)
        a dead process left a spill file."""
        if self.spill_path.exists():
            return True
        now = time.monotonic()
        if not orphans and now < self._next_orphan_scan:
            return False
        self._next_orphan_scan = now + self.retry_s
        return any(self._orphans())

    def _orphans(self) -> list[Path]:
        """Spill and claimed files of processes that no longer run (earlier runs, dead workers)."""
        found = []
        for path in self.spill_dir.glob("*.jsonl"):
            owner = path.stem.split("-")[1] if "-" in path.stem else ""
            if owner.isdigit() and int(owner) != os.getpid() and not _pid_alive(int(owner)):
                found.append(path)
        return found

    def _claim(self, path: Path) -> Path | None:
        """Rename a spill file to one this process owns; None if another process got it first."""
        claimed = self.spill_dir / f"replay-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        try:
            with self._spill_lock:
                path.rename(claimed)
        except FileNotFoundError:
            return None
        return claimed

    def _replay_all(self) -> None:
        own_claims = list(self.spill_dir.glob(f"replay-{os.getpid()}-*.jsonl"))
        candidates = [*own_claims, *self._orphans()]
        if self.spill_path.exists():
            candidates.append(self.spill_path)
        for path in candidates:
            claimed = path if path in own_claims else self._claim(path)
            if claimed is None:
                continue
            if not self._replay(claimed):
                return

    def _replay(self, path: Path) -> bool:
        """Insert a claimed spill file's records; on failure keep only those not yet stored."""
        from sqlalchemy.exc import SQLAlchemyError

        replayed = 0
        with path.open("rb") as handle:
            chunk: list[bytes] = []
            try:
                for line in handle:
                    if line.strip():
                        chunk.append(line)
                    if len(chunk) >= self.batch_size:
                        replayed += self._insert_lines(chunk)
                        chunk = []
                replayed += self._insert_lines(chunk)
            except SQLAlchemyError as exc:
                self._mark_down(exc)
                rest = path.with_suffix(".rest")
                with rest.open("wb") as out:
                    out.writelines(chunk)
                    out.writelines(handle)
                rest.replace(path)
                self._count("replayed", replayed)
                return False
        path.unlink()
        self._count("replayed", replayed)
        if replayed:
            log.info("replayed spilled prediction records", extra={"records": replayed})
        return True

    def _insert_lines(self, lines: list[bytes]) -> int:
        rows = [orjson.loads(line) for line in lines]
        for row in rows:
            row["ts"] = datetime.fromisoformat(row["ts"])
        return self._insert_or_drop(rows) if rows else 0
