"""The prediction store: one table on SQLite or PostgreSQL through SQLAlchemy Core, and its schema.

The schema is migrated by Berth itself: `berth_schema_version` holds the versions applied, and
`MIGRATIONS` the ordered steps. Every worker runs `migrate()` at start; the steps are idempotent
and, on PostgreSQL, serialised by an advisory lock, so concurrent starts are safe.
"""

from __future__ import annotations

import functools
import operator
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.schema import CreateIndex, CreateTable

from berth.errors import InvalidInput, StoreUnavailable
from berth.monitoring.records import json_dumps, require_driver, store_url

__all__ = [
    "MIGRATIONS",
    "count",
    "create_store_engine",
    "insert_rows",
    "migrate",
    "parse_since",
    "predictions",
    "query",
    "schema_version",
    "store_url",
]

metadata = MetaData()


def _predictions_table(meta: MetaData) -> Table:
    """The table as migration 1 creates it. A later migration alters it; it never edits this."""
    return Table(
        "berth_predictions",
        meta,
        Column("id", String(32), primary_key=True),
        Column("request_id", String(128), nullable=False),
        Column("ts", DateTime(timezone=True), nullable=False),
        Column("model", String(128), nullable=False),
        Column("version", Integer, nullable=False),
        Column("variant", String(64), nullable=True),
        Column("outcome", String(64), nullable=False),
        Column("rows", Integer, nullable=False),
        Column("latency_ms", Float, nullable=False),
        Column("inputs", JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        Column("outputs", JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        Index("ix_berth_predictions_model_ts", "model", "ts"),
        Index("ix_berth_predictions_request_id", "request_id"),
    )


def _feedback_table(meta: MetaData) -> Table:
    """Ground truth per request id, as migration 2 creates it (the latest feedback wins)."""
    return Table(
        "berth_feedback",
        meta,
        Column("request_id", String(128), primary_key=True),
        Column("ts", DateTime(timezone=True), nullable=False),
        Column("truth", JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    )


predictions = _predictions_table(metadata)
feedback = _feedback_table(metadata)
schema_version = Table(
    "berth_schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("description", String(200), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)


def _create_if_missing(conn: Connection, table: Table) -> None:
    """CREATE TABLE/INDEX IF NOT EXISTS: safe when two workers start at the same moment."""
    conn.execute(CreateTable(table, if_not_exists=True))
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        conn.execute(CreateIndex(index, if_not_exists=True))


def _create_predictions(conn: Connection) -> None:
    _create_if_missing(conn, _predictions_table(MetaData()))


def _create_feedback(conn: Connection) -> None:
    _create_if_missing(conn, _feedback_table(MetaData()))


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "create berth_predictions", _create_predictions),
    (2, "create berth_feedback", _create_feedback),
]
_LOCK_ID = 0x6265727468  # "berth"


def _json(value: Any) -> str:
    return json_dumps(value).decode()


def create_store_engine(url: str) -> Engine:
    """An engine with short connect timeouts (a down database must not stall the writer long)
    and orjson for the JSON columns."""
    require_driver(url)
    if url.startswith("postgresql+psycopg"):
        return create_engine(
            url,
            connect_args={"connect_timeout": 3},
            pool_pre_ping=True,
            pool_size=2,
            json_serializer=_json,
            json_deserializer=orjson.loads,
        )
    if url.startswith("sqlite:///"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30},
            json_serializer=_json,
            json_deserializer=orjson.loads,
        )

        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            _set_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(
        url, pool_pre_ping=True, json_serializer=_json, json_deserializer=orjson.loads
    )


def _set_wal(cursor: Any, attempts: int = 200) -> None:
    """`PRAGMA journal_mode=WAL`, retried: while another connection switches a new file to WAL,
    SQLite answers "database is locked" at once instead of waiting out the busy timeout (workers
    starting together on a fresh state folder)."""
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01)


def migrate(engine: Engine) -> int:
    """Apply the migrations this database has not seen; returns the schema version."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        elif conn.dialect.name == "sqlite":
            # Take the write lock first: two deferred transactions that both read the schema and
            # then write fail with "database is locked" instead of waiting for each other.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        _create_if_missing(conn, schema_version)
        applied = set(conn.scalars(select(schema_version.c.version)))
        for version, description, step in MIGRATIONS:
            if version in applied:
                continue
            step(conn)
            conn.execute(
                _insert_ignoring_duplicates(conn, schema_version),
                [{"version": version, "description": description, "applied_at": _now()}],
            )
        return max([v for v, _, _ in MIGRATIONS])


def _insert_ignoring_duplicates(conn: Connection, table: Table) -> Any:
    key = [c.name for c in table.primary_key.columns]
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=key)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=key)
    return insert(table)


def insert_rows(
    engine: Engine, rows: Sequence[dict[str, Any]], truths: Sequence[dict[str, Any]] = ()
) -> None:
    """Insert prediction records (one already stored, same id, is skipped) and feedback rows
    (replacing earlier feedback for the same request id) in one transaction."""
    if not rows and not truths:
        return
    with engine.begin() as conn:
        if rows:
            if conn.dialect.name in ("sqlite", "postgresql"):
                _insert_predictions(conn, rows)
            else:
                conn.execute(_insert_ignoring_duplicates(conn, predictions), list(rows))
        if truths:
            conn.execute(_upsert_feedback(conn), list(truths))


_COLUMNS = [c.name for c in predictions.columns]
_VALUES = operator.itemgetter(*_COLUMNS)
_TS, _INPUTS, _OUTPUTS = (_COLUMNS.index(name) for name in ("ts", "inputs", "outputs"))
# Rows of one INSERT: powers of two up to 256 (x 11 values: within SQLite's 32,766 and
# PostgreSQL's 65,535). The driver keeps each distinct statement it prepares (sqlite3 caches 128,
# psycopg prepares repeated ones on the server): one per row count up to 500 held ~30 MiB a worker.
_LARGEST_STATEMENT = 256


def _statement_sizes(rows: int) -> Iterator[int]:
    while rows:
        size = min(_LARGEST_STATEMENT, 1 << (rows.bit_length() - 1))
        yield size
        rows -= size


@functools.cache
def _insert_sql(mark: str, rows: int) -> str:
    one = "(" + ", ".join(mark for _ in _COLUMNS) + ")"
    values = ", ".join(one for _ in range(rows))
    columns = ", ".join(_COLUMNS)
    return f"INSERT INTO {predictions.name} ({columns}) VALUES {values} ON CONFLICT (id) DO NOTHING"


def _insert_predictions(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert prediction rows (skipping ids already stored) with a few multi-row INSERTs,
    passed to the driver as they are. What `conn.execute(insert(...), rows)` would store, at a
    fraction of the cost: its per-row parameter processing cost more than SQLite's insert, and
    the driver's executemany releases and retakes the GIL once per row, taking turns with the
    event loop thread each time."""
    sqlite_text = conn.dialect.name == "sqlite"
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    start = 0
    for size in _statement_sizes(len(rows)):
        chunk = rows[start : start + size]
        start += size
        values: list[Any] = []
        for row in chunk:
            value = list(_VALUES(row))
            value[_INPUTS] = _json(value[_INPUTS])  # None too: JSON null, as SQLAlchemy stores it
            value[_OUTPUTS] = _json(value[_OUTPUTS])
            if sqlite_text:  # SQLAlchemy's text form of a DateTime on SQLite (time zone dropped)
                value[_TS] = value[_TS].replace(tzinfo=None).isoformat(" ", "microseconds")
            values += value
        conn.exec_driver_sql(_insert_sql(mark, size), tuple(values))


def _upsert_feedback(conn: Connection) -> Any:
    if conn.dialect.name in ("postgresql", "sqlite"):
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(feedback)
        return statement.on_conflict_do_update(
            index_elements=["request_id"],
            set_={"ts": statement.excluded.ts, "truth": statement.excluded.truth},
        )
    return insert(feedback)


def _now() -> datetime:
    return datetime.now(UTC)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """`15m`, `2h`, `7d` (ago) or an ISO 8601 time (UTC unless it says otherwise)."""
    if not value:
        return None
    match = _DURATION.match(value.strip())
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return (now or _now()) - timedelta(**{_UNITS[unit]: amount})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(
            f"since: expected a duration such as 15m, 2h, 7d or an ISO time, got {value!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _as_utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def query(
    engine: Engine,
    model: str | None = None,
    since: datetime | None = None,
    limit: int | None = 100,
    newest_first: bool = True,
    request_id: str | None = None,
) -> list[dict[str, Any]]:
    """Stored predictions, as dicts with `ts` an aware UTC datetime and `feedback` the ground
    truth given for the request (None without)."""
    statement = select(predictions, feedback.c.truth.label("feedback")).outerjoin(
        feedback, feedback.c.request_id == predictions.c.request_id
    )
    if model is not None:
        statement = statement.where(predictions.c.model == model)
    if since is not None:
        statement = statement.where(predictions.c.ts >= _as_utc(since))
    if request_id is not None:
        statement = statement.where(predictions.c.request_id == request_id)
    order = predictions.c.ts.desc() if newest_first else predictions.c.ts.asc()
    statement = statement.order_by(order, predictions.c.id)
    if limit is not None:
        statement = statement.limit(limit)
    rows = [dict(row._mapping) for row in _read(engine, statement)]
    for row in rows:
        row["ts"] = _as_utc(row["ts"])
    return rows


def count(engine: Engine, model: str | None = None) -> int:
    statement = select(func.count()).select_from(predictions)
    if model is not None:
        statement = statement.where(predictions.c.model == model)
    return int(_read(engine, statement)[0][0] or 0)


def _read(engine: Engine, statement: Any) -> list[Any]:
    try:
        with engine.connect() as conn:
            return list(conn.execute(statement))
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        first = str(cause).splitlines()[0][:200]
        raise StoreUnavailable(
            f"cannot read the prediction store at {engine.url.render_as_string()}: {first}"
        ) from None
