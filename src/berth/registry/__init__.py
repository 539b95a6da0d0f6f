"""Versions, aliases, checksums and metadata of registered models."""

from berth.registry.hashing import sha256_file
from berth.registry.store import Registry, parse_ref

__all__ = ["Registry", "parse_ref", "sha256_file"]
