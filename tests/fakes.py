"""Fake models for fast tests: behaviour picked by the card's `tags["behaviour"]`.

- `sum`: regression, the value is the sum of the row's features.
- `slow`: like sum, after sleeping `tags["delay_s"]` seconds (default 0.2).
- `failing`: raises RuntimeError on every predict (after loading fine).
- `parity`: classification into "even"/"odd" by the rounded sum, with probabilities.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from berth.registry import Registry
from berth.runtimes import Batch, Model
from berth.settings import Settings
from berth.types import ModelCard, Outputs, Signature

FRAMEWORK = "tests.fakes:FakeModel"


class FakeModel(Model):
    framework = FRAMEWORK
    calls: list[int] = []  # noqa: RUF012 (shared on purpose: batch sizes seen by every fake)

    @classmethod
    def inspect(
        cls, path: Path, settings: Settings, feature_names: list[str] | None = None
    ) -> ModelCard:
        raise NotImplementedError("fakes are registered with register_fake()")

    def load(self) -> None:
        self.behaviour = self.card.tags.get("behaviour", "sum")
        self.delay = float(self.card.tags.get("delay_s", "0.2"))

    def predict(self, batch: Batch) -> Outputs:
        FakeModel.calls.append(len(batch))
        if self.behaviour == "failing":
            raise RuntimeError("secret internal detail: the fake model failed")
        if self.behaviour == "slow":
            time.sleep(self.delay)
        sums = np.asarray(batch, dtype=np.float64).sum(axis=1)
        if self.behaviour == "parity":
            odd = np.round(sums).astype(int) % 2
            proba = np.column_stack([1.0 - odd * 0.9 - 0.05, odd * 0.9 + 0.05])
            return Outputs(labels=["odd" if o else "even" for o in odd], probabilities=proba)
        return Outputs(values=sums)


def install_fake_runtime() -> None:
    """Nothing to install: cards name the runtime by import path (`tests.fakes:FakeModel`)."""


def register_fake(
    registry: Registry,
    name: str,
    behaviour: str = "sum",
    n_features: int = 3,
    alias: str | None = "production",
    reference: dict[str, Any] | None = None,
    **tags: str,
) -> ModelCard:
    """Register a fake model version (a tiny artifact file so checksums are real)."""
    install_fake_runtime()
    folder = registry.root.parent / f"fake-artifacts-{name}-{behaviour}"
    folder.mkdir(parents=True, exist_ok=True)
    artifact = folder / "fake.bin"
    artifact.write_bytes(f"{name}:{behaviour}".encode())
    task: Any = "classification" if behaviour == "parity" else "regression"
    card = ModelCard(
        framework=FRAMEWORK,
        format="fake",
        artifact="fake.bin",
        task=task,
        signature=Signature(kind="tabular", n_features=n_features),
        classes=["even", "odd"] if behaviour == "parity" else None,
        has_probabilities=behaviour == "parity",
        input_example=None if behaviour == "failing" else {"features": [1.0] * n_features},
        tags={"behaviour": behaviour, **tags},
        reference=reference,
    )
    return registry.register(name, [artifact], card, alias=alias)
