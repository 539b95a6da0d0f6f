"""Prediction-log records out to CSV, JSON lines or Parquet (Parquet needs `berth[parquet]`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from berth.errors import MissingExtra

__all__ = ["COLUMNS", "Format", "record_json", "write_records"]

Format = Literal["jsonl", "csv", "parquet"]
COLUMNS = [
    "id",
    "request_id",
    "ts",
    "model",
    "version",
    "variant",
    "outcome",
    "rows",
    "latency_ms",
    "inputs",
    "outputs",
    "feedback",
]


def record_json(row: dict[str, Any]) -> bytes:
    """One record as a JSON object (ts in ISO 8601)."""
    return orjson.dumps({key: row.get(key) for key in COLUMNS})


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """Scalars only: ts as ISO text, inputs and outputs as JSON text."""
    flat = {key: row.get(key) for key in COLUMNS}
    if isinstance(flat["ts"], datetime):
        flat["ts"] = flat["ts"].isoformat()
    for key in ("inputs", "outputs", "feedback"):
        if flat[key] is not None:
            flat[key] = orjson.dumps(flat[key]).decode()
    return flat


def write_records(rows: Iterable[dict[str, Any]], fmt: Format, out: BinaryIO | Path) -> int:
    """Write records to a binary stream or a file; returns how many were written."""
    if fmt == "parquet":
        return _parquet(rows, out)
    if isinstance(out, Path):
        with out.open("wb") as handle:
            return write_records(rows, fmt, handle)
    n = 0
    if fmt == "jsonl":
        for row in rows:
            out.write(record_json(row) + b"\n")
            n += 1
        return n
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow(_flat(row))
        n += 1
    text.detach()
    return n


def _parquet(rows: Iterable[dict[str, Any]], out: BinaryIO | Path) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtra("Parquet export needs pyarrow: pip install 'berth[parquet]'") from None
    flat = [{**_flat(row), "ts": row["ts"]} for row in rows]
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("request_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("model", pa.string()),
            ("version", pa.int64()),
            ("variant", pa.string()),
            ("outcome", pa.string()),
            ("rows", pa.int64()),
            ("latency_ms", pa.float64()),
            ("inputs", pa.string()),
            ("outputs", pa.string()),
            ("feedback", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(flat, schema=schema)
    pq.write_table(table, out if isinstance(out, Path) else pa.PythonFile(out, mode="w"))
    return len(flat)
