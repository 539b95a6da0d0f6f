"""The one error tree of Berth: each class carries its HTTP status, gRPC code and error code.

    BerthError                         500 internal_error
    ├── InvalidInput                   422 invalid_input
    │   └── MalformedRequest           400 malformed_request
    ├── Unauthorized                   401 unauthorized  (no valid API key)
    ├── Forbidden                      403 forbidden     (the key's scope does not cover the route)
    ├── PayloadTooLarge                413 payload_too_large
    ├── NotFound                       404 not_found
    │   ├── ModelNotFound              404 model_not_found
    │   └── VersionNotFound            404 version_not_found
    ├── Conflict                       409 conflict
    ├── RegistryError                  500 registry_error
    ├── ModelLoadError                 500 model_load_error
    │   ├── ChecksumMismatch           500 checksum_mismatch
    │   ├── LibraryVersionMismatch     500 library_version_mismatch
    │   ├── UnsafeModel                500 unsafe_model
    │   └── MissingExtra               500 missing_extra
    ├── RateLimited                    429 rate_limited  (answered with Retry-After)
    ├── ModelFailed                    500 model_failed  (message hides internals)
    ├── ImageBuildError                500 image_build_error  (`berth build` only)
    ├── Unavailable                    503 unavailable   (answered with Retry-After)
    │   ├── NotReady                   503 not_ready
    │   ├── Overloaded                 503 overloaded
    │   └── StoreUnavailable           503 store_unavailable
    └── Timeout                        504 timeout

Classes hold data, not logic. The protocol adapters (server/) map them to wire responses.
"""

from __future__ import annotations

__all__ = [
    "BerthError",
    "ChecksumMismatch",
    "Conflict",
    "Forbidden",
    "ImageBuildError",
    "InvalidInput",
    "LibraryVersionMismatch",
    "MalformedRequest",
    "MissingExtra",
    "ModelFailed",
    "ModelLoadError",
    "ModelNotFound",
    "NotFound",
    "NotReady",
    "Overloaded",
    "PayloadTooLarge",
    "RateLimited",
    "RegistryError",
    "StoreUnavailable",
    "Timeout",
    "Unauthorized",
    "Unavailable",
    "UnsafeModel",
    "VersionNotFound",
]


class BerthError(Exception):
    """Base of every error Berth raises on purpose."""

    status_code = 500
    grpc_code = "INTERNAL"
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(BerthError):
    """The request was well-formed but its content does not fit the model's signature."""

    status_code = 422
    grpc_code = "INVALID_ARGUMENT"
    code = "invalid_input"


class MalformedRequest(InvalidInput):
    """The request body could not be parsed at all (not JSON, wrong top-level shape)."""

    status_code = 400
    code = "malformed_request"


class Unauthorized(BerthError):
    """The request carries no API key, or one that is unknown or revoked."""

    status_code = 401
    grpc_code = "UNAUTHENTICATED"
    code = "unauthorized"


class Forbidden(BerthError):
    """The caller is known but may not call this route (wrong scope, other model, not loopback)."""

    status_code = 403
    grpc_code = "PERMISSION_DENIED"
    code = "forbidden"


class PayloadTooLarge(BerthError):
    """The request body or batch exceeds a configured limit."""

    status_code = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    code = "payload_too_large"


class NotFound(BerthError):
    """Something named in the request does not exist."""

    status_code = 404
    grpc_code = "NOT_FOUND"
    code = "not_found"


class ModelNotFound(NotFound):
    """No model of that name is registered or served."""

    code = "model_not_found"


class VersionNotFound(NotFound):
    """The model exists, but not that version or alias."""

    code = "version_not_found"


class Conflict(BerthError):
    """The operation contradicts the registry's state (e.g. deleting a version an alias points at)."""

    status_code = 409
    grpc_code = "FAILED_PRECONDITION"
    code = "conflict"


class RegistryError(BerthError):
    """The registry's storage is unreadable or inconsistent."""

    code = "registry_error"


class ModelLoadError(BerthError):
    """A registered model could not be loaded."""

    code = "model_load_error"


class ChecksumMismatch(ModelLoadError):
    """A file of a registered version does not match its recorded sha256."""

    code = "checksum_mismatch"


class LibraryVersionMismatch(ModelLoadError):
    """The model was registered with library versions that the running ones refuse."""

    code = "library_version_mismatch"


class UnsafeModel(ModelLoadError):
    """The artifact would need to execute code that the loading policy does not trust."""

    code = "unsafe_model"


class MissingExtra(ModelLoadError):
    """The runtime needs an optional dependency that is not installed."""

    code = "missing_extra"


class RateLimited(BerthError):
    """The caller spent its request budget; `retry_after_s` says when a request fits again."""

    status_code = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelFailed(BerthError):
    """The model raised while predicting. The message is safe to show; details go to the log."""

    code = "model_failed"


class ImageBuildError(BerthError):
    """Building a container image failed (no docker engine, a failed build, no wheel found)."""

    code = "image_build_error"


class Unavailable(BerthError):
    """The server cannot take this request now; the client should retry later."""

    status_code = 503
    grpc_code = "UNAVAILABLE"
    code = "unavailable"
    retry_after_s = 1


class NotReady(Unavailable):
    """The model is not loaded (yet)."""

    code = "not_ready"


class Overloaded(Unavailable):
    """A queue or concurrency bound is full."""

    code = "overloaded"


class StoreUnavailable(Unavailable):
    """The prediction store cannot be read now (down, unreachable, or not created yet)."""

    code = "store_unavailable"


class Timeout(BerthError):
    """The request took longer than the configured per-request timeout."""

    status_code = 504
    grpc_code = "DEADLINE_EXCEEDED"
    code = "timeout"
