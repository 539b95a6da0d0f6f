"""Load pickle and joblib artifacts while refusing every global that is not allow-listed.

Unpickling can only reach code through `find_class` (GLOBAL, STACK_GLOBAL, INST and the
extension registry all go through it), so checking each name there, before anything is called,
stops the usual payloads (`os.system`, `subprocess.Popen`, `builtins.eval`, ...). A static scan
of opcodes (pickletools) cannot read joblib files, whose array bytes sit between the opcodes, so
joblib files are read by a subclass of joblib's own NumpyUnpickler with the same `find_class`,
which also reads object arrays (a nested pickle, CVE-2024-34997) with the restricted unpickler.

Allowed: classes (and numpy ufuncs) from `trusted_modules`, names listed there in full
(`pkg.mod.function`), a few known-safe reconstruction helpers, and plain builtin types. Classes
that touch files (numpy.memmap, numpy's and scipy's file readers and writers) are refused even
inside trusted modules. This narrows what a hostile file can do; it is not a sandbox: only load
artifacts from a registry you control (the sha256 pins prove they did not change since).
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from berth.errors import UnsafeModel

__all__ = ["UnpicklePolicy", "load_joblib", "load_pickle", "load_unrestricted"]

_SAFE_GLOBALS = frozenset(
    {
        "copyreg._reconstructor",
        "_codecs.encode",
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.Counter",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
    }
)
_SAFE_BUILTINS = frozenset(
    {
        "bool",
        "bytearray",
        "bytes",
        "complex",
        "dict",
        "float",
        "frozenset",
        "int",
        "list",
        "object",
        "range",
        "set",
        "slice",
        "str",
        "tuple",
    }
)
# Refused even when their package is trusted: they read or write files, or import by name.
_DENIED_MODULES = (
    "numpy.lib.npyio",
    "numpy.lib._npyio_impl",
    "numpy.lib._datasource",
    "numpy.lib.format",
    "numpy.core.memmap",
    "numpy._core.memmap",
    "numpy.testing",
    "numpy.f2py",
    "numpy.distutils",
    "scipy.io",
    "scipy._lib",
    "sklearn.datasets",
    "sklearn.utils._testing",
)


def _under(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


class UnpicklePolicy:
    """Which globals an artifact may name; `extra` adds exact names for one format (joblib)."""

    def __init__(
        self, trusted_modules: Iterable[str], setting: str, extra: Iterable[str] = ()
    ) -> None:
        self.trusted = tuple(trusted_modules)
        self.setting = setting
        self.exact = _SAFE_GLOBALS | frozenset(extra) | frozenset(self.trusted)

    def resolve(self, module: str, name: str, find: Any) -> Any:
        """The object `module.name`, found by `find(module, name)`, or UnsafeModel."""
        full = f"{module}.{name}"
        if full in self.exact or (module == "builtins" and name in _SAFE_BUILTINS):
            return find(module, name)
        if _under(module, self.trusted) and not _under(module, _DENIED_MODULES):
            found = find(module, name)
            if self._is_safe_class(found):
                return found
        raise UnsafeModel(
            f"refused to load {full}: artifacts may name only classes from "
            f"{', '.join(self.trusted) or '(no module)'} ({self.setting}); if you trust this "
            f"file, add {full!r} (or its package) there, or set BERTH_PICKLE_POLICY=trusted"
        )

    @staticmethod
    def _is_safe_class(found: Any) -> bool:
        import numpy as np

        if isinstance(found, np.ufunc):
            return True
        if not isinstance(found, type) or issubclass(found, np.memmap):
            return False
        return not _under(found.__module__, _DENIED_MODULES)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, policy: UnpicklePolicy) -> None:
        super().__init__(file)
        self.policy = policy

    def find_class(self, module: str, name: str) -> Any:
        return self.policy.resolve(module, name, super().find_class)


def load_pickle(path: Path, policy: UnpicklePolicy) -> Any:
    with path.open("rb") as handle:
        return _RestrictedUnpickler(handle, policy).load()


def load_joblib(path: Path, policy: UnpicklePolicy) -> Any:
    """`joblib.load` (any compression, arrays read in place) through the restricted policy."""
    from joblib import numpy_pickle

    policy = UnpicklePolicy(
        policy.trusted, policy.setting, extra=["joblib.numpy_pickle.NumpyArrayWrapper"]
    )
    restricted = _restricted_numpy_unpickler(numpy_pickle)
    with path.open("rb") as raw, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with numpy_pickle._validate_fileobject_and_memmap(raw, str(path), None) as (fobj, _):
            if isinstance(fobj, str):
                raise UnsafeModel(
                    f"{path.name} uses the joblib format of before 0.10 (arrays in side files), "
                    "which restricted loading cannot check: save it again with a current joblib"
                )
            unpickler = restricted(str(path), fobj, policy)
            return unpickler.load()


def _restricted_numpy_unpickler(numpy_pickle: Any) -> Any:
    base = numpy_pickle.NumpyUnpickler
    wrapper_type = numpy_pickle.NumpyArrayWrapper

    class RestrictedNumpyUnpickler(base):  # type: ignore[misc, valid-type]
        dispatch = base.dispatch.copy()

        def __init__(self, filename: str, file_handle: Any, policy: UnpicklePolicy) -> None:
            super().__init__(filename, file_handle, ensure_native_byte_order=True, mmap_mode=None)
            self.policy = policy

        def find_class(self, module: str, name: str) -> Any:
            return self.policy.resolve(module, name, super().find_class)

        def load_build(self) -> None:
            pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
            if not isinstance(self.stack[-1], wrapper_type):
                return
            wrapper = self.stack.pop()
            if wrapper.dtype.hasobject:  # a nested pickle: read it under the same policy
                array = _RestrictedUnpickler(self.file_handle, self.policy).load()
            else:
                array = wrapper.read(self, self.ensure_native_byte_order)
            self.stack.append(array)

        dispatch[pickle.BUILD[0]] = load_build

    return RestrictedNumpyUnpickler


def load_unrestricted(path: Path, fmt: str) -> Any:
    """The plain loaders, for `BERTH_PICKLE_POLICY=trusted`."""
    if fmt == "joblib":
        import joblib

        return joblib.load(path)
    return pickle.load(io.BytesIO(path.read_bytes()))
