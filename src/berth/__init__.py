"""Berth: from a trained model file to a fast, safe, observable production API."""

from berth.errors import BerthError
from berth.registry import Registry
from berth.runtimes import Model
from berth.settings import Settings
from berth.types import ModelCard, Outputs, Signature

__version__ = "0.1.0"

__all__ = [
    "BerthError",
    "Model",
    "ModelCard",
    "Outputs",
    "Registry",
    "Settings",
    "Signature",
    "__version__",
]
