"""The one settings tree: CLI flag > environment (`BERTH_...`) > `.env` file > default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["BatchOverride", "Settings", "settings_reference"]


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]


class BatchOverride(BaseModel):
    """Per-model batching settings; a field left out keeps the global `batch_*` value."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    max_rows: int | None = Field(default=None, ge=1)
    max_wait_ms: float | None = Field(default=None, ge=0)
    queue_rows: int | None = Field(default=None, ge=1)
    concurrency: int | None = Field(default=None, ge=1)


class Settings(BaseSettings):
    """Berth's configuration. Every field can be set as `BERTH_<FIELD>` in the environment or `.env`."""

    model_config = SettingsConfigDict(
        env_prefix="BERTH_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
        use_attribute_docstrings=True,
        validate_default=True,
    )

    registry: Path = Path("registry")
    """Root folder of the model registry."""

    registry_url: str = ""
    """Registry on object storage instead of the `registry` folder: `s3://bucket/prefix` or
    `gs://bucket/prefix` (needs `berth[s3]` or `berth[gcs]`; credentials from the usual
    environment variables). Empty: the local folder."""

    registry_cache: Path | None = None
    """Local folder where versions of an object-storage registry are downloaded before loading
    (default: `~/.cache/berth/registry`)."""

    host: str = "127.0.0.1"
    """Address `berth serve` binds to."""

    port: int = Field(default=8000, ge=0, le=65535)
    """HTTP port of `berth serve`."""

    models: CsvList = Field(default_factory=list)
    """Models to serve, as `NAME`, `NAME@VERSION` or `NAME@ALIAS` (comma-separated in the
    environment). Empty: every model that has a `production` alias."""

    default_model: str | None = None
    """Model answered by `/predict`, `/predict/batch` and `/model/info` when several are served."""

    serve_alias: str = "production"
    """Alias a served model follows when it is named without a version."""

    refresh_interval_s: float = Field(default=2.0, ge=0)
    """How often served models' aliases and routes are re-read from the registry, in seconds; a
    change loads and warms the new version before switching to it. 0 turns the watch off."""

    max_batch: int = Field(default=1000, ge=1)
    """Largest number of instances accepted in one batch request."""

    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Largest request body accepted, in bytes; larger bodies get 413."""

    cors_origins: CsvList = Field(default_factory=list)
    """Origins allowed by CORS (comma-separated). Empty: CORS headers are not sent at all."""

    strict_library_versions: bool = False
    """Refuse to load a model registered under a different scikit-learn minor version (otherwise a
    warning is logged)."""

    trusted_modules: CsvList = Field(
        default_factory=lambda: ["sklearn", "numpy", "scipy", "xgboost", "lightgbm"]
    )
    """Modules whose types a skops file may contain, and (with `pickle_policy=restricted`) whose
    classes a pickle or joblib file may name (comma-separated; a package covers its submodules,
    `pkg.mod.Class` names one class)."""

    pickle_policy: Literal["restricted", "trusted", "refuse"] = "restricted"
    """How pickle and joblib artifacts load: `restricted` allows only classes from
    `trusted_modules` (and a few known-safe helpers), `trusted` loads anything (the file can run
    any code), `refuse` refuses them (use skops)."""

    force_library_versions: bool = False
    """Load a model even when it was registered under a different major scikit-learn version
    (otherwise it is refused)."""

    grpc_port: int = Field(default=0, ge=0, le=65535)
    """gRPC port of the Open Inference Protocol (`inference.GRPCInferenceService`, with health and
    reflection), served by the same process and data plane as HTTP. 0 turns gRPC off. Needs
    `pip install 'berth[grpc]'`."""

    grpc_max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=4 * 1024 * 1024)
    """Largest gRPC message received or sent, in bytes."""

    model_control: bool = True
    """Serve the V2 model-repository extension (index, load, unload over REST and gRPC), so Triton
    and KServe clients can unload and load served models."""

    predict_threads: int = Field(default=4, ge=1)
    """Threads that run model code off the event loop."""

    onnx_intra_op_threads: int = Field(default=0, ge=0)
    """Threads onnxruntime uses inside one operator (0: its default, one per core)."""

    onnx_inter_op_threads: int = Field(default=0, ge=0)
    """Threads onnxruntime uses to run independent operators in parallel (0: its default)."""

    torch_device: str = "cpu"
    """Device PyTorch models run on: `cpu`, `cuda`, `cuda:1`, `mps`, ..."""

    torch_threads: int = Field(default=0, ge=0)
    """Threads PyTorch uses for intra-op parallelism on the CPU (0: its default)."""

    workers: int = Field(default=1, ge=1)
    """Worker processes of `berth serve`, sharing one port. Models load once, before the workers
    are forked, so extra workers share the loaded models' memory pages."""

    fast_path: bool = True
    """Answer predict requests without FastAPI's router (same handler, same errors, much less
    overhead per request). Turn off only to compare."""

    batching: bool = True
    """Merge concurrent requests for one model version into one `predict` call (adaptive
    batching). A lone request never waits: it runs at once when the model is idle."""

    batch_max_rows: int = Field(default=1024, ge=1)
    """Most rows in one merged batch (rows are counted, not requests; a single larger request
    still runs, alone)."""

    batch_max_wait_ms: float = Field(default=2.0, ge=0)
    """Longest a request waits for others to join its batch, counted from the arrival of the
    batch's first request. Applies only while the model is busy or other requests are queued."""

    batch_queue_rows: int = Field(default=4096, ge=1)
    """Most rows waiting per model version; beyond it requests get 503 with Retry-After."""

    batch_concurrency: int = Field(default=1, ge=1)
    """Batches of one model version computing at the same time (per worker process)."""

    batch_inline_max_ms: float = Field(default=2.0, ge=0)
    """A lone one-row request runs on the event loop itself, skipping the thread hand-off, when
    the model's one-row predict takes at most this long (0: always use the thread pool)."""

    batch_models: dict[str, BatchOverride] = Field(default_factory=dict)
    """Per-model batching overrides, by model name, e.g.
    `{"tabular": {"max_rows": 64, "max_wait_ms": 5}, "intent": {"enabled": false}}` (JSON in
    `BERTH_BATCH_MODELS`)."""

    api_keys_file: Path | None = None
    """File with the API keys' salted hashes (default: `<registry>/.berth/keys.json`). While it
    holds no active key, inference is open and admin routes answer only on loopback."""

    public_paths: CsvList = Field(
        default_factory=lambda: [
            "/health",
            "/ready",
            "/metrics",
            "/docs",
            "/docs/oauth2-redirect",
            "/redoc",
            "/openapi.json",
            "/v2/health/live",
            "/v2/health/ready",
        ]
    )
    """Paths answered without an API key, rate limit or concurrency bound (comma-separated)."""

    rate_limit_key_rate: float = Field(default=0.0, ge=0)
    """Requests per second each API key may make on average (token bucket; 0: no limit)."""

    rate_limit_key_burst: int | None = Field(default=None, ge=1)
    """Requests an API key may make at once above its rate (default: the rate, at least 1)."""

    rate_limit_address_rate: float = Field(default=0.0, ge=0)
    """Requests per second each client address may make without a valid key (0: no limit)."""

    rate_limit_address_burst: int | None = Field(default=None, ge=1)
    """Requests a client address may make at once above its rate (default: the rate, at least 1)."""

    rate_limit_storage: str = "memory"
    """Where token buckets live: `memory` (one process) or a `redis://` URL (shared by every
    worker and replica)."""

    rate_limit_on_storage_error: Literal["open", "closed"] = "open"
    """When the rate-limit storage is unreachable: `open` lets requests through, `closed` answers
    503. Either way it is logged and counted."""

    max_in_flight: int = Field(default=256, ge=0)
    """Most requests handled at once (all but the public paths); beyond it 503 with Retry-After,
    at once. 0: no bound."""

    request_timeout_s: float = Field(default=30.0, ge=0)
    """Longest time one request may take before it is answered 504 (0: no timeout)."""

    shutdown_grace_s: float = Field(default=0.0, ge=0)
    """After SIGTERM/SIGINT, seconds during which readiness is false but new connections are still
    accepted (set it to the time your load balancer needs to notice, e.g. 5 on Kubernetes;
    `berth serve --shutdown-grace`)."""

    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    """After the grace period, longest wait for in-flight requests; then the process exits."""

    ssl_certfile: Path | None = None
    """PEM certificate (chain) for HTTPS; with `ssl_keyfile`, `berth serve` speaks only HTTPS, and
    only TLS on the gRPC port."""

    ssl_keyfile: Path | None = None
    """PEM private key for HTTPS (and gRPC over TLS)."""

    security_headers: bool = True
    """Send X-Content-Type-Options, X-Frame-Options, Referrer-Policy and Cache-Control (and HSTS
    over HTTPS) on every response."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Minimum level of log records."""

    log_format: Literal["json", "text"] = "json"
    """`json`: one JSON object per line; `text`: human-readable lines."""

    log_file: Path | None = None
    """Also write logs to this file, rotated by size (see `log_file_max_bytes`). Empty: stderr only."""

    log_file_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    """Size at which the log file is rotated."""

    log_file_backups: int = Field(default=5, ge=0)
    """Rotated log files kept (`berth.log.1` ... `berth.log.N`)."""

    access_log: bool = True
    """Log one line per HTTP request (request id, model, version, status, latency). Probes and
    `/metrics` scrapes are logged at debug level."""

    tracing: Literal["off", "console", "otlp"] = "off"
    """OpenTelemetry spans of every request (needs `berth[otel]`): `off`; `console` (each span
    printed as JSON on stdout, to try it out); `otlp` (sent over OTLP/HTTP to
    `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`, default
    `http://localhost:4318`). Service name, sampler, headers and resource attributes come from the
    standard `OTEL_*` variables (`OTEL_SERVICE_NAME`, default `berth`; `OTEL_TRACES_SAMPLER`)."""

    state_dir: Path | None = None
    """Folder for local state: the default SQLite prediction store and the prediction-log spill
    files. Default: `.berth` beside the registry folder."""

    prediction_log: bool = True
    """Record every prediction (sampled by `prediction_log_sample_rate`) in the prediction store."""

    prediction_store: str = ""
    """SQLAlchemy URL of the prediction store, e.g. `postgresql://user:pass@host/db` (needs
    `berth[postgres]`). Empty: the SQLite file `predictions.db` in the state folder."""

    prediction_log_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    """Fraction of prediction requests recorded (1.0: all of them)."""

    prediction_log_fields: CsvList = Field(default_factory=lambda: ["inputs", "outputs"])
    """Optional fields stored with each prediction: `inputs`, `outputs` (comma-separated; empty:
    only ids, model, version, outcome and latency). Inputs can be sensitive."""

    prediction_log_buffer: int = Field(default=10_000, ge=1)
    """Records held in memory for the database writer; beyond it they spill to a local file."""

    prediction_log_batch: int = Field(default=500, ge=1)
    """Most records written to the database in one transaction."""

    prediction_log_flush_s: float = Field(default=0.5, gt=0)
    """Longest time a record waits in memory before the writer sends what it has."""

    prediction_log_retry_s: float = Field(default=5.0, gt=0)
    """After a database error, records spill to the local file for this long before a retry."""

    prediction_log_spill_max_bytes: int = Field(default=1024**3, ge=1024)
    """Largest size of one process's spill file; records beyond it are dropped (and counted)."""

    drift_window: int = Field(default=2000, ge=10)
    """Rows of live traffic per model version that drift is computed on (a sliding window)."""

    drift_min_rows: int = Field(default=200, ge=1)
    """Rows the window needs before drift scores are reported."""

    drift_interval_s: float = Field(default=15.0, gt=0)
    """How often the drift metrics are recomputed."""


def settings_reference() -> str:
    """The configuration reference as Markdown, generated from the field docstrings."""
    lines = ["| Setting | Environment | Default | Meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        if isinstance(default, list):
            default = ",".join(default) or "(empty)"
        doc = " ".join((field.description or "").split())
        lines.append(f"| `{name}` | `BERTH_{name.upper()}` | `{default}` | {doc} |")
    return "\n".join(lines) + "\n"
