"""The protocol-neutral data plane: pick a version, decode, predict off the event loop, observe.

Each served model has a `Traffic`: the loaded versions that requests naming no version go to (its
primary, and the targets of its route). A watcher re-reads aliases and routes from the registry; when
they change it loads and warms the new versions first, swaps the Traffic in one assignment, and
retires the old versions once their in-flight requests have finished. A version that fails to load
never receives traffic: the old Traffic stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import ValidationError

from berth.batching import Batcher, BatchTicket, batch_policy
from berth.errors import (
    BerthError,
    InvalidInput,
    ModelFailed,
    ModelLoadError,
    ModelNotFound,
    NotReady,
    RegistryError,
)
from berth.logs import log_fields
from berth.monitoring.context import current_request
from berth.monitoring.experiments import ExperimentBook, agree
from berth.monitoring.monitor import Monitor
from berth.registry import Registry, parse_ref
from berth.router import Route, choose_variant, should_shadow
from berth.runtimes import Batch, Model, runtime_for
from berth.settings import Settings
from berth.types import ModelCard, Outputs
from berth.validation import InputCodec

__all__ = ["DataPlane", "LoadedModel", "Prediction", "Traffic", "load_version"]

log = logging.getLogger("berth.dataplane")
prediction_log = logging.getLogger("berth.predictions")


@dataclass(slots=True, eq=False)
class LoadedModel:
    """A model version ready to predict, with its input decoder."""

    card: ModelCard
    model: Model
    codec: InputCodec
    in_flight: int = 0
    batcher: Batcher | None = None
    """Created on first use (in the serving process's event loop); None when not batching."""
    batching_decided: bool = False


@dataclass(frozen=True, slots=True)
class Prediction:
    """What one inference call produced, which version computed it, and the route variant chosen."""

    card: ModelCard
    outputs: Outputs
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class Traffic:
    """Where requests for one model that name no version go. Replaced whole, never mutated."""

    primary: LoadedModel
    route: Route | None = None
    targets: dict[str, LoadedModel] = field(default_factory=dict)

    def versions(self) -> dict[str, int]:
        return {"": self.primary.card.version} | {
            t: e.card.version for t, e in self.targets.items()
        }

    def entries(self) -> list[LoadedModel]:
        return [self.primary, *self.targets.values()]

    def pick(self, key: str | None) -> tuple[str | None, LoadedModel]:
        if self.route is None:
            return None, self.primary
        variant = choose_variant(self.route.weights, key)
        return variant, self.targets[variant]

    def find(self, version: int) -> LoadedModel | None:
        return next((e for e in self.entries() if e.card.version == version), None)


class DataPlane:
    """Serves a fixed set of model names; any registered version of them loads on first use."""

    def __init__(
        self, registry: Registry, settings: Settings, monitor: Monitor | None = None
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.monitor = monitor or Monitor(settings)
        specs = settings.models or [
            name for name in registry.models() if settings.serve_alias in registry.aliases(name)
        ]
        if not specs:
            raise ModelNotFound(
                f"no model to serve in {registry.location}: name one (berth serve NAME) or give one "
                f"the {settings.serve_alias!r} alias (berth models promote NAME VERSION)"
            )
        self._pins: dict[str, str | None] = {}
        self.served: dict[str, ModelCard] = {}
        for spec in specs:
            name, version = parse_ref(spec)
            self._pins[name] = version
            self.served[name] = registry.card(name, self._follows(name))
        self.default_name = settings.default_model
        if self.default_name is None and len(self.served) == 1:
            self.default_name = next(iter(self.served))
        if self.default_name is not None and self.default_name not in self.served:
            raise ModelNotFound(
                f"default model {self.default_name!r} is not among the served models "
                f"({', '.join(self.served)})"
            )
        self.traffic: dict[str, Traffic] = {}
        self.experiments = ExperimentBook()
        self.events: deque[dict[str, Any]] = deque(maxlen=100)
        self._loaded: dict[tuple[str, int], LoadedModel] = {}
        self._loading: dict[tuple[str, int], asyncio.Task[LoadedModel]] = {}
        self._executor = ThreadPoolExecutor(
            settings.predict_threads, thread_name_prefix="berth-predict"
        )
        # Unpickling imports modules; two threads importing the same ones can deadlock.
        self._load_lock = threading.Lock()
        self._refresh_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self._canary_seen: dict[str, int] = {}
        self.unloaded: set[str] = set()
        self.on_batch: Callable[[ModelCard, int, int, Sequence[float]], None] | None = (
            self._observe_batch
        )
        """Called for every merged batch with (card, rows, requests, queue waits in seconds)."""
        self.ready = False
        self._tickets = self.monitor.tracing is not None  # batch details for the trace spans

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every served version; readiness turns true only when all of them loaded."""
        await self.monitor.start()
        for card in self.served.values():
            self.monitor.expecting(card)
        for name in self.served:
            await self.refresh(name, initial=True)
        for entry in list(self._loaded.values()):  # also those loaded before a fork
            self.monitor.loaded(entry.card, vocabulary=entry.model.vocabulary())
        self.ready = True
        if self.settings.refresh_interval_s > 0:
            self._spawn(self._watch())

    def preload(self) -> None:
        """Load every version `start()` will serve, in the calling thread, before any event loop
        or thread exists (so that worker processes forked afterwards share the loaded models, and the
        prediction store's code)."""
        for name in self.served:
            primary, _, targets = self._desired(name)
            for version in sorted({primary, *targets.values()}):
                if (name, version) not in self._loaded:
                    self._loaded[(name, version)] = self.load_now(name, version)
        if self.monitor.prediction_log is not None:
            self.monitor.prediction_log.import_store()

    async def stop(self) -> None:
        self.ready = False
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=False)
        for entry in self._loaded.values():
            if entry.batcher is not None and entry.batcher.stats.batches:
                log.info(
                    "batching stats",
                    extra={"model": entry.card.name, "version": entry.card.version}
                    | {"pid": os.getpid()}
                    | entry.batcher.stats.as_dict(),
                )
        await self.monitor.stop()

    def _observe_batch(
        self, card: ModelCard, rows: int, requests: int, waits: Sequence[float]
    ) -> None:
        """Batch size and queue waits into their histograms (called from the predict threads)."""
        metrics, version = self.monitor.metrics, str(card.version)
        metrics.batch_size.labels(card.name, version).observe(rows)
        queue_wait = metrics.batch_queue_wait.labels(card.name, version)
        for wait in waits:
            queue_wait.observe(wait)

    def batch_stats(self) -> dict[str, dict[str, float]]:
        """Batching totals per loaded version (`name@version`), for logs and metrics."""
        return {
            entry.card.ref: entry.batcher.stats.as_dict()
            for entry in self._loaded.values()
            if entry.batcher is not None
        }

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- lookups ----------------------------------------------------------------------------

    def card(self, name: str | None, version: str | None = None) -> ModelCard:
        """The card of a served model's version (None: the version it serves by default)."""
        name = self._served_name(name)
        if version is None:
            return self.served[name]
        return self.registry.card(name, version)

    def loaded(self) -> list[ModelCard]:
        return [entry.card for entry in self._loaded.values()]

    def route(self, name: str) -> Route | None:
        traffic = self.traffic.get(self._served_name(name))
        return traffic.route if traffic else None

    # -- inference --------------------------------------------------------------------------

    async def predict(
        self,
        name: str | None,
        version: str | None,
        body: Any,
        *,
        many: bool,
        request_id: str = "",
        key: str | None = None,
    ) -> Prediction:
        """Decode one instance (or `{"instances": [...]}` when `many`, parsed or as the server's
        `validation.NumberRows`) and predict it.

        With no `version`, the model's route (if any) picks the variant, by `key` or by the route's
        sticky body field when given; otherwise the served version answers.
        """
        name = self._served_name(name)
        variant, entry, body = await self._choose(name, version, body, key)
        codec = entry.codec
        decode = partial(codec.decode_many if many else codec.decode_one, body)
        outputs = await self._infer(name, variant, entry, decode, request_id)
        traffic = self.traffic.get(name)
        if variant is not None and traffic is not None and traffic.route is not None:
            self._maybe_shadow(name, traffic, body, many, outputs, variant, request_id)
        return Prediction(entry.card, outputs, variant)

    async def predict_batch(
        self,
        name: str | None,
        version: str | None,
        rows: list[Any],
        request_id: str = "",
        key: str | None = None,
    ) -> Prediction:
        """Predict bare rows (for protocols that carry tensors rather than JSON instances)."""
        name = self._served_name(name)
        variant, entry, _ = await self._choose(name, version, None, key)
        decode = partial(entry.codec.decode_rows, rows)
        return Prediction(
            entry.card, await self._infer(name, variant, entry, decode, request_id), variant
        )

    async def _infer(
        self,
        name: str,
        variant: str | None,
        entry: LoadedModel,
        decode: Callable[[], Batch],
        request_id: str,
    ) -> Outputs:
        """Decode and predict on one chosen version, observing the outcome either way."""
        entry.in_flight += 1
        started = time.perf_counter()
        try:
            batch = decode()
            decoded = time.perf_counter()
            ticket = self._ticket() if self._tickets else None
            outputs = await self._run(entry, batch, request_id, ticket)
        except BerthError as exc:
            self._observe(name, variant, entry, started, exc.code, None, request_id)
            self.monitor.failed(entry.card, request_id, exc.code, started, variant)
            raise
        finally:
            entry.in_flight -= 1
        self._observe(name, variant, entry, started, "ok", outputs, request_id)
        self.monitor.predicted(entry.card, request_id, batch, outputs, started, decoded, variant)
        return outputs

    async def _choose(
        self, name: str, version: str | None, body: Any, key: str | None
    ) -> tuple[str | None, LoadedModel, Any]:
        if name in self.unloaded:
            raise NotReady(f"model {name!r} is unloaded; load it again to serve it")
        traffic = self.traffic.get(name)
        if version is not None:
            number = self.registry.resolve(name, version)
            entry = traffic.find(number) if traffic else None
            return None, entry or await self._get(name, number), body
        if traffic is None:
            raise NotReady(f"model {name!r} is not loaded yet")
        field = traffic.route.sticky_field if traffic.route else None
        if field and isinstance(body, dict) and field in body:
            body = dict(body)
            value = body.pop(field)
            key = str(value) if key is None else key
        variant, entry = traffic.pick(key)
        return variant, entry, body

    def _batcher(self, entry: LoadedModel) -> Batcher | None:
        if entry.batching_decided:
            return entry.batcher
        entry.batching_decided = True
        policy = batch_policy(self.settings, entry.card.name)
        batcher = None
        if policy is not None:
            card = entry.card
            batcher = Batcher(
                entry.model.predict,
                self._executor,
                policy,
                on_outputs=partial(self.monitor.batch_predicted, card),
            )

            def observe(rows: int, requests: int, waits: Sequence[float]) -> None:
                if self.on_batch is not None:
                    self.on_batch(card, rows, requests, waits)

            batcher.observer = observe
        entry.batcher = batcher
        return batcher

    def _ticket(self) -> BatchTicket | None:
        """A ticket the batcher fills in for the current request's record (for its spans)."""
        record = current_request.get()
        if record is None:
            return None
        record.batch = BatchTicket()
        return record.batch

    def _predict_observed(self, entry: LoadedModel, batch: Batch) -> Outputs:
        """One model call without a batcher, monitored as a batcher's `on_outputs` would."""
        started = time.perf_counter()
        outputs = entry.model.predict(batch)
        if len(outputs) == len(batch):
            self.monitor.batch_predicted(entry.card, batch, outputs, time.perf_counter() - started)
        return outputs

    async def _run(
        self,
        entry: LoadedModel,
        batch: Batch,
        request_id: str,
        ticket: BatchTicket | None = None,
    ) -> Outputs:
        batcher = self._batcher(entry)
        try:
            if batcher is not None:
                return await batcher.submit(batch, ticket)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._predict_observed, entry, batch)
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

    def _observe(
        self,
        name: str,
        variant: str | None,
        entry: LoadedModel,
        started: float,
        outcome: str,
        outputs: Outputs | None,
        request_id: str,
    ) -> None:
        rows = len(outputs) if outputs is not None else 0
        latency = time.perf_counter() - started
        record = current_request.get()
        if record is not None and record.logged:  # the access line carries them
            record.outcome, record.rows = outcome, rows
        else:
            log_fields(
                prediction_log,
                logging.INFO,
                "prediction",
                {
                    "request_id": request_id,
                    "model": entry.card.name,
                    "version": entry.card.version,
                    "variant": variant,
                    "rows": rows,
                    "latency_ms": round(latency * 1000, 3),
                    "outcome": outcome,
                },
            )
        if variant is None or outcome in (
            "invalid_input",
            "malformed_request",
            "payload_too_large",
        ):
            return  # client mistakes say nothing about a variant's health
        route = self.traffic[name].route
        window = route.auto_rollback.window_s if route and route.auto_rollback else 60.0
        self.experiments.record(
            name, variant, outputs, outcome == "ok", latency, window, request_id
        )
        if (
            route is not None
            and route.auto_rollback is not None
            and variant != route.primary_target
        ):
            self._judge(name, route)

    # -- shadow traffic ---------------------------------------------------------------------

    def _maybe_shadow(
        self,
        name: str,
        traffic: Traffic,
        body: Any,
        many: bool,
        primary: Outputs,
        variant: str,
        request_id: str,
    ) -> None:
        route = traffic.route
        if route is None or route.shadow is None or not should_shadow(route):
            return
        shadow = traffic.targets[route.shadow]
        if shadow.card.version == traffic.targets[variant].card.version:
            return
        self._spawn(self._shadow(name, route.shadow, shadow, body, many, primary, request_id))

    async def _shadow(
        self,
        name: str,
        label: str,
        entry: LoadedModel,
        body: Any,
        many: bool,
        primary: Outputs,
        request_id: str,
    ) -> None:
        await asyncio.sleep(0)  # let the primary's response go out first
        stats = self.experiments.stats(name, f"shadow:{label}")
        started = time.perf_counter()
        entry.in_flight += 1
        try:
            batch = entry.codec.decode_many(body) if many else entry.codec.decode_one(body)
            outputs = await self._run(entry, batch, "")
        except BerthError:
            stats.shadow_errors += 1
            return
        finally:
            entry.in_flight -= 1
        latency = time.perf_counter() - started
        stats.shadow_latencies.append(latency)
        matches = agree(primary, outputs)
        stats.shadow_compared += len(matches)
        stats.shadow_agreed += sum(matches)
        prediction_log.info(
            "shadow prediction",
            extra={
                "request_id": request_id,
                "model": name,
                "version": entry.card.version,
                "variant": f"shadow:{label}",
                "rows": len(outputs),
                "latency_ms": round(latency * 1000, 3),
                "agreed": sum(matches),
            },
        )

    # -- automatic rollback -----------------------------------------------------------------

    def _judge(self, name: str, route: Route) -> None:
        policy = route.auto_rollback
        if policy is None:
            return
        seen = self._canary_seen[name] = self._canary_seen.get(name, 0) + 1
        if seen % max(1, policy.min_requests // 5):
            return
        now = time.monotonic()
        primary = self.experiments.stats(name, route.primary_target)
        n_p, err_p, p99_p = primary.window_summary(now, policy.window_s)
        for target, weight in route.weights.items():
            if target == route.primary_target or weight == 0:
                continue
            n_c, err_c, p99_c = self.experiments.stats(name, target).window_summary(
                now, policy.window_s
            )
            if min(n_p, n_c) < policy.min_requests:
                continue
            reason = None
            if err_c - err_p > policy.max_error_rate_delta:
                reason = f"error rate {err_c:.1%} vs {err_p:.1%} on {route.primary_target}"
            elif p99_p > 0 and p99_c > policy.max_p99_ratio * p99_p:
                reason = (
                    f"p99 {p99_c * 1000:.1f} ms vs {p99_p * 1000:.1f} ms on {route.primary_target}"
                )
            if reason:
                self._roll_back(name, route, target, reason)

    def _roll_back(self, name: str, route: Route, target: str, reason: str) -> None:
        weights = {**route.weights, target: 0}
        rolled = route.model_copy(update={"weights": weights})
        self.registry.set_route(name, rolled.model_dump(mode="json", exclude_none=True))
        current = self.traffic[name]
        self.traffic[name] = Traffic(current.primary, rolled, current.targets)
        self._event(name, "auto_rollback", f"{target} weight set to 0: {reason}", logging.WARNING)

    # -- aliases, routes and loading ----------------------------------------------------------

    def _follows(self, name: str) -> str | None:
        """What the served version of `name` follows: its pin, the serve alias, or the latest."""
        pin = self._pins[name]
        if pin is None and self.settings.serve_alias in self.registry.aliases(name):
            return self.settings.serve_alias
        return pin

    def _desired(self, name: str) -> tuple[int, Route | None, dict[str, int]]:
        primary = self.registry.resolve(name, self._follows(name))
        raw = self.registry.route(name)
        if raw is None:
            return primary, None, {}
        try:
            route = Route.model_validate(raw)
        except ValidationError as exc:
            raise RegistryError(f"the stored route of {name!r} is invalid: {exc}") from exc
        targets = [*route.weights, *([route.shadow] if route.shadow else [])]
        return primary, route, {t: self.registry.resolve(name, t) for t in targets}

    async def refresh(self, name: str, *, initial: bool = False) -> bool:
        """Bring one model's traffic in line with the registry; True if it changed."""
        async with self._refresh_lock:
            if name in self.unloaded:
                return False
            current = self.traffic.get(name)
            try:
                primary, route, targets = self._desired(name)
                if (
                    current
                    and current.route == route
                    and current.versions() == {"": primary} | targets
                ):
                    return False
                entries = {
                    v: await self._get(name, v) for v in sorted({primary, *targets.values()})
                }
            except BerthError as exc:
                if initial:
                    raise
                self._event(
                    name,
                    "refresh_failed",
                    f"{exc.message}; still serving what it served",
                    logging.ERROR,
                )
                return False
            new = Traffic(entries[primary], route, {t: entries[v] for t, v in targets.items()})
            self.traffic[name] = new
            self.served[name] = new.primary.card
            if current is not None:
                described = route.describe() if route else f"version {primary}"
                self._event(name, "switched", f"now serving {described}")
                retired = [e for e in current.entries() if all(e is not n for n in new.entries())]
                self._spawn(self._retire(retired))
            return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_interval_s)
            for name in list(self.served):
                await self.refresh(name)

    async def _retire(self, entries: list[LoadedModel]) -> None:
        """Unload versions that left the traffic once their in-flight requests have drained."""
        for entry in entries:
            while entry.in_flight:
                await asyncio.sleep(0.01)
            if all(entry is not e for t in self.traffic.values() for e in t.entries()):
                self._loaded.pop((entry.card.name, entry.card.version), None)
                self.monitor.unloaded(entry.card)
                log.info(
                    "model unloaded",
                    extra={"model": entry.card.name, "version": entry.card.version},
                )

    def _event(self, name: str, kind: str, message: str, level: int = logging.INFO) -> None:
        event = {"model": name, "event": kind, "message": message, "time": time.time()}
        self.events.append(event)
        self.monitor.metrics.traffic_events.labels(name, kind).inc()
        log.log(level, message, extra={"model": name, "event": kind})

    # -- model control (the V2 repository extension) ----------------------------------------

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether a served model (or one of its versions) is loaded and not unloaded on purpose."""
        name = self._served_name(name)
        if name in self.unloaded:
            return False
        if version is None:
            return name in self.traffic
        return (name, self.registry.resolve(name, version)) in self._loaded

    async def load_model(self, name: str) -> None:
        """Serve a model again after `unload_model` (a no-op when it is loaded)."""
        name = self._served_name(name)
        self.unloaded.discard(name)
        await self.refresh(name, initial=True)

    def unload_model(self, name: str) -> None:
        """Release every loaded version of a served model; it answers NotReady until loaded.

        Requests already running finish on the versions they hold.
        """
        name = self._served_name(name)
        self.unloaded.add(name)
        self.traffic.pop(name, None)
        for key in [key for key in self._loaded if key[0] == name]:
            self.monitor.unloaded(self._loaded.pop(key).card)
        self._event(name, "unloaded", f"model {name!r} unloaded")

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

    async def ensure_loaded(self, name: str, version: int) -> LoadedModel:
        """Load (verify, warm up) a version unless it is loaded; raises if it cannot be."""
        return await self._get(name, version)

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
        self.monitor.loaded(entry.card, time.perf_counter() - started, entry.model.vocabulary())
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
            return load_version(self.registry, self.settings, name, version)


def load_version(registry: Registry, settings: Settings, name: str, version: int) -> LoadedModel:
    """Verify checksums, load and warm up (with the card's input example) one version."""
    card = registry.card(name, version)
    registry.verify(card)
    model = runtime_for(card.framework)(card, registry.path(name, version), settings)
    model.load()
    entry = LoadedModel(card, model, InputCodec(card.signature, settings.max_batch))
    if card.input_example is not None:
        try:
            model.predict(entry.codec.decode_one(card.input_example))
        except BerthError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"{card.ref} failed its warm-up prediction: {exc}") from exc
    return entry
