"""Wire shapes of the simple JSON API, for the OpenAPI document (bodies are parsed by hand, faster)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from berth.types import Label, ModelCard, Signature

__all__ = [
    "BatchRequest",
    "BatchResponse",
    "ErrorBody",
    "ModelInfo",
    "PredictRequest",
    "PredictResponse",
    "ReadyResponse",
    "model_info",
    "request_examples",
]


class PredictRequest(BaseModel):
    """One instance: `text` for text models, `features` (a list, or names to numbers) for tabular."""

    text: str | None = Field(default=None, min_length=1, description="Raw text (text models).")
    features: list[float] | dict[str, float] | None = Field(
        default=None, description="Feature values in order, or an object of feature name -> value."
    )


class BatchRequest(BaseModel):
    """Several instances; each may also be a bare string or list of numbers."""

    instances: list[PredictRequest | str | list[float] | dict[str, float]] = Field(min_length=1)


class PredictionRow(BaseModel):
    prediction: Label = Field(description="Class label (classification) or value (regression).")
    probabilities: dict[str, float] | None = Field(
        default=None, description="Class label -> probability, when the model has probabilities."
    )
    confidence: float | None = Field(
        default=None, description="Probability of the predicted class."
    )


class PredictResponse(PredictionRow):
    model: str
    version: int
    request_id: str


class BatchResponse(BaseModel):
    model: str
    version: int
    request_id: str
    predictions: list[PredictionRow]


class ErrorBody(BaseModel):
    error: str = Field(description="What was wrong, in words.")
    code: str = Field(description="A stable machine-readable error code.")


class ModelInfo(BaseModel):
    name: str
    version: int
    aliases: list[str] = Field(description="Aliases pointing at this version.")
    framework: str
    format: str
    task: str
    signature: Signature
    classes: list[Label] | None
    has_probabilities: bool
    description: str
    metrics: dict[str, float]
    files: dict[str, str]
    libraries: dict[str, str]
    input_example: Any
    created_at: datetime | None
    loaded: bool


class ModelSummary(BaseModel):
    name: str
    version: int = Field(description="The version served when a request names none.")
    versions: list[int]
    aliases: dict[str, int]
    task: str
    default: bool


class ReadyResponse(BaseModel):
    ready: bool
    models: list[dict[str, Any]]


def model_info(card: ModelCard, aliases: dict[str, int], loaded: bool) -> dict[str, Any]:
    data = card.model_dump(mode="json", exclude={"reference", "tags"})
    data["aliases"] = sorted(a for a, v in aliases.items() if v == card.version)
    data["loaded"] = loaded
    return data


def request_examples(cards: list[ModelCard], many: bool) -> dict[str, dict[str, Any]]:
    """OpenAPI `examples` for a predict body, one per served model, from their input examples."""
    examples = {}
    for card in cards:
        one = card.input_example
        if one is None:
            one = (
                {"text": "example"}
                if card.signature.kind == "text"
                else {"features": [0.0] * (card.signature.n_features or 0)}
            )
        value = {"instances": [one, one]} if many else one
        examples[card.name] = {
            "summary": f"{card.ref}: {card.signature.describe()}",
            "value": value,
        }
    return examples
