"""The protocol-neutral data plane: pick a version, decode, predict off the event loop, observe."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from berth.errors import BerthError, InvalidInput, ModelFailed, ModelNotFound, NotReady
from berth.registry import Registry, parse_ref
from berth.runtimes import Batch, Model, runtime_for
from berth.settings import Settings
from berth.types import ModelCard, Outputs
from berth.validation import InputCodec

__all__ = ["DataPlane", "LoadedModel", "Prediction"]

log = logging.getLogger("berth.dataplane")
prediction_log = logging.getLogger("berth.predictions")


@dataclass(slots=True)
class LoadedModel:
    """A model version ready to predict, with its input decoder."""

    card: ModelCard
    model: Model
    codec: InputCodec


@dataclass(frozen=True, slots=True)
class Prediction:
    """What one inference call produced, and which version computed it."""

    card: ModelCard
    outputs: Outputs


class DataPlane:
    """Serves a fixed set of model names; any registered version of them loads on first use."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        specs = settings.models or [
            name for name in registry.models() if settings.serve_alias in registry.aliases(name)
        ]
        if not specs:
            raise ModelNotFound(
                f"no model to serve in {registry.root}: name one (berth serve NAME) or give one "
                f"the {settings.serve_alias!r} alias (berth models promote NAME VERSION)"
            )
        self.served: dict[str, ModelCard] = {}
        for spec in specs:
            name, version = parse_ref(spec)
            if version is None and settings.serve_alias in registry.aliases(name):
                version = settings.serve_alias
            self.served[name] = registry.card(name, version)
        self.default_name = settings.default_model
        if self.default_name is None and len(self.served) == 1:
            self.default_name = next(iter(self.served))
        if self.default_name is not None and self.default_name not in self.served:
            raise ModelNotFound(
                f"default model {self.default_name!r} is not among the served models "
                f"({', '.join(self.served)})"
            )
        self._loaded: dict[tuple[str, int], LoadedModel] = {}
        self._loading: dict[tuple[str, int], asyncio.Task[LoadedModel]] = {}
        self._executor = ThreadPoolExecutor(
            settings.predict_threads, thread_name_prefix="berth-predict"
        )
        # Unpickling imports modules; two threads importing the same ones can deadlock.
        self._load_lock = threading.Lock()
        self.ready = False

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every served version; readiness turns true only when all of them loaded."""
        await asyncio.gather(*(self._get(card.name, card.version) for card in self.served.values()))
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        self._executor.shutdown(wait=True, cancel_futures=False)

    # -- lookups ----------------------------------------------------------------------------

    def card(self, name: str | None, version: str | None = None) -> ModelCard:
        """The card of a served model's version (None: the version it serves by default)."""
        name = self._served_name(name)
        if version is None:
            return self.served[name]
        return self.registry.card(name, version)

    def loaded(self) -> list[ModelCard]:
        return [entry.card for entry in self._loaded.values()]

    # -- inference --------------------------------------------------------------------------

    async def predict(
        self, name: str | None, version: str | None, body: Any, *, many: bool, request_id: str = ""
    ) -> Prediction:
        """Decode one instance (or `{"instances": [...]}` when `many`) and predict it."""
        card = self.card(name, version)
        entry = await self._get(card.name, card.version)
        started = time.perf_counter()
        try:
            batch = entry.codec.decode_many(body) if many else entry.codec.decode_one(body)
            outputs = await self._run(entry, batch, request_id)
        except BerthError as exc:
            self._log(entry.card, request_id, started, exc.code, 0)
            raise
        self._log(entry.card, request_id, started, "ok", len(outputs))
        return Prediction(entry.card, outputs)

    async def predict_batch(
        self, name: str | None, version: str | None, rows: list[Any]
    ) -> Prediction:
        """Predict bare rows (for protocols that carry tensors rather than JSON instances)."""
        card = self.card(name, version)
        entry = await self._get(card.name, card.version)
        return Prediction(entry.card, await self._run(entry, entry.codec.decode_rows(rows), ""))

    async def _run(self, entry: LoadedModel, batch: Batch, request_id: str) -> Outputs:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, entry.model.predict, batch)
        except BerthError:
            raise
        except Exception as exc:
            log.exception(
                "model failed",
                extra={
                    "request_id": request_id,
                    "model": entry.card.name,
                    "version": entry.card.version,
                },
            )
            raise ModelFailed(
                f"model {entry.card.ref} failed to predict; the server log has the details"
                + (f" (request id {request_id})" if request_id else "")
            ) from exc

    def _log(
        self, card: ModelCard, request_id: str, started: float, outcome: str, rows: int
    ) -> None:
        prediction_log.info(
            "prediction",
            extra={
                "request_id": request_id,
                "model": card.name,
                "version": card.version,
                "rows": rows,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "outcome": outcome,
            },
        )

    # -- loading ----------------------------------------------------------------------------

    def _served_name(self, name: str | None) -> str:
        if name is None:
            if self.default_name is None:
                raise InvalidInput(
                    f"several models are served ({', '.join(self.served)}): call "
                    "/models/{name}/predict or set BERTH_DEFAULT_MODEL"
                )
            return self.default_name
        if name not in self.served:
            raise ModelNotFound(
                f"model {name!r} is not served here (served: {', '.join(self.served)})"
            )
        return name

    async def _get(self, name: str, version: int) -> LoadedModel:
        key = (name, version)
        entry = self._loaded.get(key)
        if entry is not None:
            return entry
        task = self._loading.get(key)
        if task is None:
            loop = asyncio.get_running_loop()
            task = loop.create_task(self._load(name, version))
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        try:
            return await asyncio.shield(task)
        except BerthError:
            raise
        except Exception as exc:
            log.exception("loading %s@%s failed", name, version)
            raise NotReady(f"model {name}@{version} could not be loaded") from exc

    async def _load(self, name: str, version: int) -> LoadedModel:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        entry = await loop.run_in_executor(self._executor, self.load_now, name, version)
        self._loaded[(name, version)] = entry
        log.info(
            "model loaded",
            extra={
                "model": name,
                "version": version,
                "load_s": round(time.perf_counter() - started, 3),
            },
        )
        return entry

    def load_now(self, name: str, version: int) -> LoadedModel:
        """Verify, load and warm up one version in the calling thread."""
        with self._load_lock:
            return self._load_locked(name, version)

    def _load_locked(self, name: str, version: int) -> LoadedModel:
        card = self.registry.card(name, version)
        self.registry.verify(card)
        model = runtime_for(card.framework)(card, self.registry.path(name, version), self.settings)
        model.load()
        entry = LoadedModel(card, model, InputCodec(card.signature, self.settings.max_batch))
        if card.input_example is not None:
            model.predict(entry.codec.decode_one(card.input_example))
        return entry
