"""A custom model: the user's own subclass of `Model`, named by `module:Class`.

The class's module is a `.py` file registered with the version (so it is pinned by sha256 like any
artifact) or an installed module. It runs with the server's rights: register only code you trust.
"""

from __future__ import annotations

from pathlib import Path

from berth.errors import InvalidInput, ModelLoadError
from berth.runtimes.base import Batch, Hints, Model, Vocabulary
from berth.runtimes.imports import load_class, split_spec
from berth.settings import Settings
from berth.types import ModelCard, Outputs

__all__ = ["CustomModel"]


def _model_class(spec: str, folder: Path) -> type[Model]:
    found = load_class(spec, folder)
    if not (isinstance(found, type) and issubclass(found, Model)) or found is CustomModel:
        raise InvalidInput(f"{spec} is not a subclass of berth.runtimes.Model")
    return found


class CustomModel(Model):
    """Delegates to the user's `Model` subclass recorded in `options["class"]`."""

    framework = "custom"

    @classmethod
    def inspect(
        cls,
        path: Path,
        settings: Settings,
        feature_names: list[str] | None = None,
        hints: Hints | None = None,
    ) -> ModelCard:
        spec = hints.model_class if hints else None
        if spec is None:
            raise InvalidInput(f"{path.name}: a custom model needs --class module:Class")
        module_name, _ = split_spec(spec)
        if path.is_file() and module_name != path.stem:
            raise InvalidInput(
                f"--class {spec} is not in {path.name}: use --class {path.stem}:ClassName, or "
                "register the folder that holds both"
            )
        folder = path if path.is_dir() else path.parent
        user_class = _model_class(spec, folder)
        card = user_class.inspect(path, settings, feature_names=feature_names, hints=hints)
        return card.model_copy(
            update={
                "framework": cls.framework,
                "options": {**card.options, "class": spec},
                "description": card.description or f"custom model {spec}",
            }
        )

    def load(self) -> None:
        spec = str(self.card.options.get("class", ""))
        try:
            user_class = _model_class(spec, self.directory)
        except Exception as exc:
            raise ModelLoadError(f"{self.card.ref}: cannot import {spec}: {exc}") from exc
        self.inner = user_class(self.card, self.directory, self.settings)
        self.inner.load()

    def predict(self, batch: Batch) -> Outputs:
        return self.inner.predict(batch)

    def vocabulary(self) -> Vocabulary | None:
        return self.inner.vocabulary()
