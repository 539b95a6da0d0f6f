"""Find a class named `module:Class` in a registered version's folder or among installed modules."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any

from berth.errors import InvalidInput

__all__ = ["load_class", "split_spec"]

_lock = threading.Lock()


def split_spec(spec: str) -> tuple[str, str]:
    """`pkg.module:Class` or `pkg.module.Class` as (module, class)."""
    module, sep, name = spec.partition(":")
    if not sep:
        module, _, name = spec.rpartition(".")
    if not module or not name.isidentifier():
        raise InvalidInput(f"--class must look like module:Class, got {spec!r}")
    return module, name


def load_class(spec: str, folder: Path | None = None) -> Any:
    """The class `spec` names: from `<folder>/<module>.py` when that file exists, else imported.

    A file in the folder is imported under a name unique to its content, so two versions of a
    custom model with the same module name never share (or overwrite) a `sys.modules` entry.
    """
    module_name, class_name = split_spec(spec)
    source = folder / (module_name.replace(".", "/") + ".py") if folder is not None else None
    if source is not None and source.is_file():
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
        unique = f"berth_custom_{module_name.replace('.', '_')}_{digest}"
        with _lock:
            module = sys.modules.get(unique)
            if module is None:
                spec_ = importlib.util.spec_from_file_location(unique, source)
                if spec_ is None or spec_.loader is None:
                    raise InvalidInput(f"cannot import {source}")
                module = importlib.util.module_from_spec(spec_)
                sys.modules[unique] = module
                try:
                    spec_.loader.exec_module(module)
                except BaseException:
                    del sys.modules[unique]
                    raise
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            where = f" (no {source.name} in the model folder either)" if source else ""
            raise InvalidInput(f"cannot import {module_name!r} for {spec}: {exc}{where}") from exc
    found = getattr(module, class_name, None)
    if found is None:
        raise InvalidInput(f"module {module_name!r} has no {class_name!r}")
    return found
