"""`inference.GRPCInferenceService`: thin adapters from protobuf to the shared V2 code and back."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from berth.dataplane import DataPlane
from berth.errors import BerthError
from berth.ids import new_id
from berth.server import inference
from berth.server.grpc import codec
from berth.server.proto import inference_pb2 as pb
from berth.server.proto import inference_pb2_grpc as pb_grpc
from berth.settings import Settings

__all__ = ["InferenceServicer"]

log = logging.getLogger("berth.server")

Reply = TypeVar("Reply")
Method = Callable[[Any, Any, Any], Awaitable[Reply]]


def _guarded(method: Method[Reply]) -> Method[Reply]:
    """Answer a BerthError with its gRPC status code and message; hide unexpected errors."""

    @functools.wraps(method)
    async def guarded(self: Any, request: Any, context: Any) -> Reply:
        try:
            return await method(self, request, context)
        except BerthError as exc:
            if exc.status_code >= 500 and exc.grpc_code == "INTERNAL":
                log.error("%s: %s", exc.code, exc.message)
            await context.abort(grpc.StatusCode[exc.grpc_code], exc.message)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
        raise AssertionError("context.abort returned")  # pragma: no cover

    return guarded


def _version(text: str) -> str | None:
    return text or None


def _stream_error(request: Any, message: str) -> Any:
    response = pb.ModelInferResponse(
        model_name=request.model_name, model_version=request.model_version, id=request.id
    )
    return pb.ModelStreamInferResponse(error_message=message, infer_response=response)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Every RPC calls the same data plane and V2 helpers as the REST routes."""

    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        self.dataplane = dataplane
        self.settings = settings

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.dataplane.ready)

    @_guarded
    async def ModelReady(self, request: Any, context: Any) -> Any:
        ready = self.dataplane.model_ready(request.name, _version(request.version))
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(**inference.server_metadata(self.settings))

    @_guarded
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        card = self.dataplane.card(request.name, _version(request.version))
        return pb.ModelMetadataResponse(
            name=card.name,
            versions=[str(v) for v in self.dataplane.registry.versions(card.name)],
            platform=card.framework,
            inputs=codec.tensor_metadata(inference.input_specs(card)),
            outputs=codec.tensor_metadata(inference.output_specs(card)),
        )

    async def _infer(self, request: Any, context: Any) -> Any:
        version = _version(request.model_version)
        card = self.dataplane.card(request.model_name, version)
        parsed = codec.infer_request(request)
        request_id = parsed.id or new_id()
        key = dict(context.invocation_metadata() or ()).get("x-berth-key")
        prediction, outputs = await inference.infer(
            self.dataplane, card, version, parsed, request_id, key
        )
        return codec.infer_response(
            prediction.card.name, str(prediction.card.version), parsed.id, outputs
        )

    @_guarded
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return await self._infer(request, context)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """Answer each request in order; an error travels in its message, the stream goes on."""
        async for request in requests:
            try:
                reply = pb.ModelStreamInferResponse(
                    infer_response=await self._infer(request, context)
                )
            except BerthError as exc:
                reply = _stream_error(request, exc.message)
            except Exception:
                log.exception("unhandled error in ModelStreamInfer")
                reply = _stream_error(request, "internal server error")
            yield reply

    @_guarded
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        await self._check_control(context)
        entries = inference.repository_index(self.dataplane)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(**entry)
                for entry in entries
                if not request.ready or entry["state"] == "READY"
            ]
        )

    @_guarded
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        await self._check_control(context)
        inference.check_load_parameters(codec.parameters(request.parameters))
        await self.dataplane.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @_guarded
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await self._check_control(context)
        self.dataplane.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def _check_control(self, context: Any) -> None:
        if not self.settings.model_control:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                "the model-repository extension is off (BERTH_MODEL_CONTROL=false)",
            )
