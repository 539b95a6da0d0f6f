"""The prediction log: rows equal requests, sampling, fields, spill and replay, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from berth.monitoring import store
from berth.monitoring.metrics import Metrics
from berth.monitoring.predlog import PredictionLog
from berth.registry import Registry
from berth.settings import Settings
from berth.types import Outputs
from tests.conftest import ClientFactory
from tests.databases import postgres_url_or_skip, private_schema, with_port
from tests.fakes import register_fake
from tests.servers import free_port


@pytest.fixture(params=["sqlite", "postgresql"])
def store_setting(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """`prediction_store` for each backend ("" is the default SQLite file)."""
    if request.param == "sqlite":
        yield ""
    else:
        with private_schema(postgres_url_or_skip()) as url:
            yield url


def _engine(settings: Settings, state: Path):  # type: ignore[no-untyped-def]
    return store.create_store_engine(store.store_url(settings.prediction_store, state))


def test_rows_equal_requests_served(
    registry: Registry, make_client: ClientFactory, store_setting: str, tmp_path: Path
) -> None:
    register_fake(registry, "adder")
    state = tmp_path / "state"
    ids = []
    with make_client(registry, prediction_store=store_setting, state_dir=state) as client:
        for i in range(20):
            response = client.post("/predict", json={"features": [i, 1, 1]})
            ids.append(response.headers["x-request-id"])
        batch = client.post("/predict/batch", json={"instances": [[1, 2, 3], [4, 5, 6]]})
        ids.append(batch.headers["x-request-id"])
        assert client.post("/predict", json={"features": [1]}).status_code == 422
        deadline = time.monotonic() + 10
        while True:  # the admin route reads what the background writer has stored so far
            found = client.get("/admin/predictions", params={"limit": 1000}).json()
            if found["count"] == 22 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert found["count"] == 22
    engine = _engine(Settings(prediction_store=store_setting), state)
    rows = store.query(engine, model="adder", limit=None, newest_first=False)
    engine.dispose()
    ok = [r for r in rows if r["outcome"] == "ok"]
    assert [r["request_id"] for r in ok] == ids
    assert ok[3]["inputs"] == [[3.0, 1.0, 1.0]]
    assert ok[3]["outputs"] == {"predictions": [5.0]}
    assert ok[-1]["rows"] == 2 and ok[-1]["outputs"] == {"predictions": [6.0, 15.0]}
    failed = [r for r in rows if r["outcome"] != "ok"]
    assert [(r["outcome"], r["inputs"], r["rows"]) for r in failed] == [("invalid_input", None, 0)]
    assert all(r["latency_ms"] >= 0 and r["ts"].tzinfo is not None for r in rows)


def test_sampling_and_field_selection(
    registry: Registry, make_client: ClientFactory, tmp_path: Path
) -> None:
    register_fake(registry, "adder")
    state = tmp_path / "state"
    settings = {"state_dir": state, "prediction_log_fields": ""}
    with make_client(registry, **settings) as client:
        for _ in range(5):
            client.post("/predict", json={"features": [1, 2, 3]})
    with make_client(registry, prediction_log_sample_rate=0.0, state_dir=state) as client:
        for _ in range(5):
            client.post("/predict", json={"features": [1, 2, 3]})
    engine = _engine(Settings(), state)
    rows = store.query(engine, limit=None)
    engine.dispose()
    assert len(rows) == 5
    assert all(r["inputs"] is None and r["outputs"] is None for r in rows)


def _submit(plog: PredictionLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        plog.submit(
            request_id=f"req-{i}",
            model="m",
            version=1,
            outcome="ok",
            latency_ms=1.0,
            batch=np.array([[float(i)]]),
            outputs=Outputs(values=np.array([float(i)])),
        )


def _wait(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_full_buffer_spills_and_is_replayed(tmp_path: Path) -> None:
    settings = Settings(prediction_log_buffer=3, prediction_log_flush_s=0.05)
    plog = PredictionLog(settings, tmp_path, Metrics())
    plog.spill_dir.mkdir(parents=True)
    _submit(plog, 10)  # the writer is not running yet: 3 wait in memory, 7 spill
    assert plog.counts["spilled"] == 7
    assert len(plog.spill_path.read_text().splitlines()) == 7
    plog.start()
    _wait(lambda: plog.counts["written"] + plog.counts["replayed"] == 10)
    plog.close()
    assert plog.counts == {"written": 3, "spilled": 7, "replayed": 7, "dropped": 0}
    assert not list(plog.spill_dir.iterdir())
    engine = store.create_store_engine(plog.url)
    assert store.count(engine) == 10
    assert sorted(r["request_id"] for r in store.query(engine, limit=None)) == sorted(
        f"req-{i}" for i in range(10)
    )
    engine.dispose()


def test_outage_spills_then_replays_on_postgresql(tmp_path: Path) -> None:
    """The database is unreachable, then comes back: nothing lost, nothing duplicated."""
    with private_schema(postgres_url_or_skip()) as url:
        down = with_port(url, free_port())  # nobody listens there
        settings = Settings(prediction_store=down, prediction_log_flush_s=0.05)
        plog = PredictionLog(settings, tmp_path, Metrics())
        plog.start()
        _submit(plog, 25)
        _wait(lambda: plog.counts["spilled"] == 25)
        plog.close()  # graceful stop while down: everything is in the spill file
        assert len(plog.spill_path.read_text().splitlines()) == 25

        back = PredictionLog(Settings(prediction_store=url), tmp_path, Metrics())
        back.start()
        _submit(back, 5, start=25)
        _wait(lambda: back.counts["replayed"] == 25 and back.counts["written"] == 5)
        back.close()
        engine = store.create_store_engine(back.url)
        assert store.count(engine) == 30
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version FROM berth_schema_version")).all()
        engine.dispose()
        assert versions == [(1,), (2,)]
        assert back.counts["dropped"] == 0
        assert not list(back.spill_dir.iterdir())


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    engine = store.create_store_engine(f"sqlite:///{tmp_path / 'p.db'}")
    assert store.migrate(engine) == 2
    assert store.migrate(engine) == 2
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM berth_schema_version")).scalar() == 2
    engine.dispose()


def test_parse_since() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert store.parse_since("15m", now) == now - timedelta(minutes=15)
    assert store.parse_since("2d", now) == now - timedelta(days=2)
    assert store.parse_since("2026-01-01T00:00:00", now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert store.parse_since(None) is None
    from berth.errors import InvalidInput

    with pytest.raises(InvalidInput, match="since: expected a duration"):
        store.parse_since("yesterday")


def test_concurrent_migrations(store_setting: str, tmp_path: Path) -> None:
    """Workers starting together all migrate the same database without an error."""
    from concurrent.futures import ThreadPoolExecutor

    url = store.store_url(store_setting, tmp_path)

    def migrate(_: int) -> int:
        engine = store.create_store_engine(url)
        try:
            return store.migrate(engine)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(migrate, range(8))) == [2] * 8


def test_feedback_joins_the_prediction_log(
    registry: Registry, make_client: ClientFactory, store_setting: str, tmp_path: Path
) -> None:
    register_fake(registry, "parity", "parity")
    # /feedback answers for predictions it remembers: those that went through a route
    registry.set_route("parity", {"weights": {"production": 1}})
    state = tmp_path / "state"
    with make_client(registry, prediction_store=store_setting, state_dir=state) as client:
        ids = [
            client.post("/predict", json={"features": [i, 0, 0]}).headers["x-request-id"]
            for i in range(3)
        ]
        assert (
            client.post("/feedback", json={"request_id": ids[0], "label": "odd"}).status_code == 200
        )
        assert (
            client.post("/feedback", json={"request_id": ids[0], "label": "even"}).status_code
            == 200
        )
        assert (
            client.post("/feedback", json={"request_id": ids[2], "label": "even"}).status_code
            == 200
        )
    engine = _engine(Settings(prediction_store=store_setting), state)
    rows = {r["request_id"]: r for r in store.query(engine, limit=None)}
    with engine.connect() as conn:
        versions = [v for (v,) in conn.execute(text("SELECT version FROM berth_schema_version"))]
    engine.dispose()
    assert [rows[i]["feedback"] for i in ids] == ["even", None, "even"]  # the latest one wins
    assert sorted(versions) == [1, 2]


def test_a_record_the_database_refuses_is_dropped_alone(tmp_path: Path) -> None:
    """PostgreSQL's JSONB refuses NUL characters: that record is dropped, the others stored."""
    with private_schema(postgres_url_or_skip()) as url:
        settings = Settings(prediction_store=url, prediction_log_flush_s=0.05)
        plog = PredictionLog(settings, tmp_path, Metrics())
        plog.start()
        for i, text in enumerate(["fine", "bad\x00text", "also fine"]):
            plog.submit(
                request_id=f"r{i}",
                model="m",
                version=1,
                outcome="ok",
                latency_ms=1.0,
                batch=[text],
                outputs=Outputs(labels=["x"]),
            )
        _wait(lambda: plog.counts["written"] + plog.counts["dropped"] == 3)
        _submit(plog, 2, start=10)  # the writer carries on
        _wait(lambda: plog.counts["written"] == 4)
        plog.close()
        engine = store.create_store_engine(plog.url)
        stored = sorted(r["request_id"] for r in store.query(engine, limit=None))
        engine.dispose()
    assert stored == ["r0", "r2", "req-10", "req-11"]
    assert plog.counts == {"written": 4, "spilled": 0, "replayed": 0, "dropped": 1}


def test_serving_imports_sqlalchemy_only_in_the_writer_thread(
    registry: Registry, tmp_path: Path
) -> None:
    """SQLAlchemy takes ~0.2 s to import: not on the way to readiness (the writer loads it)."""
    register_fake(registry, "adder")
    script = f"""
import sys, time
from pathlib import Path
from berth.server.app import create_app
from berth.settings import Settings
app = create_app(Settings(registry={str(registry.root)!r}, state_dir={str(tmp_path)!r}))
plog = app.state.dataplane.monitor.prediction_log
print("before start:", "sqlalchemy" in sys.modules)
plog.start()
deadline = time.monotonic() + 30
while not plog._migrated and time.monotonic() < deadline:
    time.sleep(0.05)
plog.close()
print("after start:", "sqlalchemy" in sys.modules, plog._migrated)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.stdout.splitlines() == ["before start: False", "after start: True True"]


def test_fast_insert_stores_what_sqlalchemy_would(store_setting: str, tmp_path: Path) -> None:
    """insert_rows passes rows to the driver itself: the same stored values as a Core insert."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    engine = store.create_store_engine(store.store_url(store_setting, tmp_path))
    store.migrate(engine)
    record = {
        "request_id": "req",
        "ts": datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC),  # microseconds 0: still written
        "model": "m",
        "version": 3,
        "variant": None,
        "outcome": "ok",
        "rows": 2,
        "latency_ms": 1.5,
        "inputs": np.array([[1.0, 2.5], [3.0, 4.0]]),
        "outputs": {"predictions": ["a", "b"], "probabilities": np.array([[0.25, 0.75]] * 2)},
    }
    with engine.begin() as conn:
        conn.execute(insert(store.predictions), [{**record, "id": "core"}])
    store.insert_rows(engine, [{**record, "id": "fast"}, {**record, "id": "fast2", "inputs": None}])
    store.insert_rows(engine, [{**record, "id": "fast", "model": "other"}])  # stored id: skipped
    with engine.connect() as conn:
        rows = {r.id: r._asdict() for r in conn.execute(select(store.predictions))}
        raw = {
            r[0]: tuple(r[1:])
            for r in conn.execute(text("SELECT id, ts, inputs FROM berth_predictions"))
        }
    engine.dispose()
    assert sorted(rows) == ["core", "fast", "fast2"]
    core, fast = rows.pop("core"), rows.pop("fast")
    assert {**core, "id": ""} == {**fast, "id": ""}
    assert fast["inputs"] == [[1.0, 2.5], [3.0, 4.0]]
    assert rows["fast2"]["inputs"] is None
    assert raw["core"] == raw["fast"]  # the stored text (SQLite) or value, not just its reading
    if engine.dialect.name == "sqlite":
        assert raw["fast"][0] == "2026-11-22 08:00:00.000000"


def test_writes_of_any_size_use_a_few_distinct_statements(
    store_setting: str, tmp_path: Path
) -> None:
    """The driver keeps every distinct statement it prepared: writes of 1 to 600 records must
    reuse a handful of them (one per record count cost ~30 MiB a worker), and store every row."""
    from datetime import UTC, datetime

    from sqlalchemy import event

    engine = store.create_store_engine(store.store_url(store_setting, tmp_path))
    store.migrate(engine)
    statements: set[str] = set()
    event.listen(engine, "before_cursor_execute", lambda *args: statements.add(args[2]))
    record = {
        "request_id": "req",
        "ts": datetime(2026, 12, 7, tzinfo=UTC),
        "model": "m",
        "version": 1,
        "variant": None,
        "outcome": "ok",
        "rows": 1,
        "latency_ms": 1.0,
        "inputs": np.array([[1.0]]),
        "outputs": None,
    }
    sizes = [*range(1, 70), 255, 256, 257, 500, 511, 600]
    for size in sizes:
        store.insert_rows(engine, [{**record, "id": f"{size}-{i}"} for i in range(size)])
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM berth_predictions")).scalar_one()
    engine.dispose()
    assert stored == sum(sizes)
    inserts = {sql for sql in statements if sql.startswith("INSERT INTO berth_predictions")}
    assert len(inserts) <= 9  # 1, 2, 4, ..., 256 rows
