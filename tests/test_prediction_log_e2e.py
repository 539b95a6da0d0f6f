"""The prediction log of a real `berth serve`: a database outage and graceful shutdowns."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from berth.monitoring import store
from berth.registry import Registry
from tests.databases import postgres_url_or_skip, private_schema, target_of, with_port
from tests.servers import RunningServer, berth_server, free_port
from tests.tcp_proxy import TcpProxy
from tests.test_metrics import value

pytestmark = pytest.mark.e2e


def _log_count(server: RunningServer, outcome: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return value(text, "berth_prediction_log_records_total", outcome=outcome)


def _wait_for(server: RunningServer, outcome: str, n: int, timeout: float = 20.0) -> None:
    """Until the counter of `outcome` (or of several, joined by +) reaches n."""
    deadline = time.monotonic() + timeout
    while sum(_log_count(server, o) for o in outcome.split("+")) < n:
        assert time.monotonic() < deadline, f"{outcome} never reached {n}:\n{server.log()[-3000:]}"
        time.sleep(0.1)


def _send(server: RunningServer, example: object, n: int) -> None:
    for _ in range(n):
        assert httpx.post(f"{server.url}/predict", json=example).status_code == 200


def _stop(server: RunningServer) -> None:
    server.process.terminate()
    server.process.wait(timeout=30)
    assert "Application shutdown complete" in server.log()


def test_postgres_outage_then_recovery(examples_registry: Registry, tmp_path: Path) -> None:
    example = examples_registry.card("regression").input_example
    with private_schema(postgres_url_or_skip()) as url:
        proxy = TcpProxy(*target_of(url))
        proxy.up()
        env = {
            "BERTH_PREDICTION_STORE": with_port(url, proxy.port),
            "BERTH_STATE_DIR": str(tmp_path / "state"),
            "BERTH_PREDICTION_LOG_FLUSH_S": "0.05",
            "BERTH_PREDICTION_LOG_RETRY_S": "0.5",
        }
        try:
            with berth_server(examples_registry.root, "regression", env=env) as server:
                _send(server, example, 10)
                _wait_for(server, "written", 10)
                proxy.down()
                _send(server, example, 10)
                _wait_for(server, "spilled", 10)
                proxy.up()
                _send(server, example, 10)  # written, or spilled if sent before the next retry
                _wait_for(server, "written+replayed", 30)
                assert _log_count(server, "replayed") == _log_count(server, "spilled") >= 10
                assert _log_count(server, "dropped") == 0
                _send(server, example, 5)  # still in the buffer when the server is told to stop
                _stop(server)
        finally:
            proxy.down()
        engine = store.create_store_engine(store.store_url(url, tmp_path))
        assert store.count(engine, model="regression") == 35
        engine.dispose()
    assert "prediction store unreachable" in server.log()


def test_sqlite_store_catches_up_after_a_run_with_an_unreachable_store(
    examples_registry: Registry, tmp_path: Path
) -> None:
    example = examples_registry.card("regression").input_example
    state = tmp_path / "state"
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    env = {"BERTH_STATE_DIR": str(state), "BERTH_PREDICTION_STORE": unreachable}
    with berth_server(examples_registry.root, "regression", env=env) as server:
        _send(server, example, 8)
        _stop(server)
    spilled = list((state / "spill").glob("*.jsonl"))
    assert sum(len(p.read_text().splitlines()) for p in spilled) == 8
    env = {"BERTH_STATE_DIR": str(state)}  # the default store: SQLite in the state folder
    with berth_server(examples_registry.root, "regression", env=env) as server:
        _send(server, example, 4)
        _stop(server)
    engine = store.create_store_engine(f"sqlite:///{state / 'predictions.db'}")
    assert store.count(engine, model="regression") == 12
    engine.dispose()
    assert not list((state / "spill").glob("*.jsonl"))
